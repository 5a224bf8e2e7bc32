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


@dataclass(frozen=True)
class SendResult:
    """What the provider answered: its id for the message, when it has one."""

    provider_message_id: str | None


class Channel(Protocol):
    """A configured sender for one channel. ``send`` raises ``careflow.errors.SendError``."""

    def send(self, message: OutgoingMessage) -> SendResult: ...

    def lookup(self, message: OutgoingMessage, since: datetime) -> SendResult | None:
        """Find a message the provider already accepted (after an ambiguous attempt), or None."""
        ...


class ChannelProvider(Protocol):
    """A plugin-provided factory: ``name`` is what ``[channels.X] provider`` refers to."""

    name: str
    channels: frozenset[str]

    def create(self, settings: Settings, channel: str) -> Channel: ...
