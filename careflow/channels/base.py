"""The channel interface: a provider turns a rendered message into a sent one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from careflow.config import Settings


@dataclass(frozen=True)
class OutgoingMessage:
    """A rendered message ready for a provider (plain data, no ORM objects)."""

    event_id: int
    channel: str
    to: str
    body: str
    center_code: str
    subject: str | None = None
    html_body: str | None = None  # e-mail: the HTML alternative to ``body``
    unsubscribe_url: str | None = None  # e-mail: the signed one-click link (List-Unsubscribe)
    locale: str | None = None
    # WhatsApp outside the 24-hour window: the approved template and its variables (JSON).
    content_sid: str | None = None
    content_variables: str | None = None


@dataclass(frozen=True)
class SendResult:
    """What the provider answered: its id for the message, when it has one."""

    provider_message_id: str | None


class Channel(Protocol):
    """A configured sender for one channel. ``send`` raises ``careflow.errors.SendError``."""

    def send(self, message: OutgoingMessage) -> SendResult: ...

    def lookup(self, message: OutgoingMessage, since: datetime) -> SendResult | None:
        """Find a message the provider already accepted (after an ambiguous attempt), or None.

        Include messages the provider accepted but has not sent yet (still in its queue), and
        compare texts the way the provider may have rewritten them: a miss means a resend.
        """
        ...


class ChannelProvider(Protocol):
    """A plugin-provided factory: ``name`` is what ``[channels.X] provider`` refers to."""

    name: str
    channels: frozenset[str]

    def create(self, settings: Settings, channel: str) -> Channel: ...
