"""SMS and WhatsApp through the official Twilio SDK, against any Twilio-compatible base URL."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client
from twilio.rest.api.v2010.account.message import MessageInstance

from careflow.channels.base import Channel, OutgoingMessage, SendResult
from careflow.channels.twilio_errors import KNOWN_ERRORS, ErrorClass, classify
from careflow.channels.twilio_http import PooledHttpClient
from careflow.config import CenterSettings, Settings, TwilioSettings
from careflow.errors import SendError
from careflow.hookspecs import hookimpl

_clients: dict[tuple[str, str, str], Client] = {}
_clients_lock = threading.Lock()

# Where careflow's web app receives Twilio's webhooks (see careflow.web.webhooks).
STATUS_CALLBACK_PATH = "/webhooks/twilio/status"
INBOUND_PATH = "/webhooks/twilio/inbound"
# How many of a sender/recipient pair's newest messages a look-up reads for ones still queued.
QUEUED_LOOKUP_LIMIT = 50


def status_callback_url(settings: Settings) -> str | None:
    """The status callback sends ask for: configured explicitly, or derived from [web] public_url."""
    if settings.twilio.status_callback_url:
        return settings.twilio.status_callback_url
    if settings.web.public_url:
        return settings.web.public_url.rstrip("/") + STATUS_CALLBACK_PATH
    return None


# The SDK logs request URLs and query strings (phone numbers) at INFO: keep them out of logs.
logging.getLogger("twilio.http_client").setLevel(logging.WARNING)


def twilio_client(settings: TwilioSettings) -> Client:
    """One client per process and account: it pools its HTTP connections."""
    assert settings.account_sid and settings.auth_token
    token = settings.auth_token.get_secret_value()
    key = (settings.account_sid, token, settings.base_url)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            http = PooledHttpClient(settings.base_url, timeout=settings.timeout_seconds)
            client = Client(settings.account_sid, token, http_client=http)
            client.api.base_url = settings.base_url.rstrip("/")
            _clients[key] = client
    return client


class TwilioChannel:
    """Creates messages with the Twilio REST API; errors become classified ``SendError``s."""

    def __init__(
        self,
        settings: TwilioSettings,
        channel: str,
        centers: Mapping[str, CenterSettings] | None = None,
        status_callback: str | None = None,
    ) -> None:
        self._settings = settings
        self._channel = channel
        self._centers = centers or {}
        self._status_callback = status_callback or settings.status_callback_url
        self._client = twilio_client(settings)

    def _address(self, number: str) -> str:
        return f"whatsapp:{number}" if self._channel == "whatsapp" else number

    def _sender(self, center_code: str) -> dict[str, Any]:
        """The center's own sender, else the global one (validated at start-up to exist)."""
        center = self._centers.get(center_code)
        tw = self._settings
        if self._channel == "whatsapp":
            number = (center.whatsapp_from if center else None) or tw.whatsapp_from or tw.from_number
            return {"from_": self._address(number or "")}
        if center is not None and center.messaging_service_sid:
            return {"messaging_service_sid": center.messaging_service_sid}
        if center is not None and center.sms_from:
            return {"from_": center.sms_from}
        if tw.messaging_service_sid:
            return {"messaging_service_sid": tw.messaging_service_sid}
        return {"from_": tw.from_number or ""}

    def send(self, message: OutgoingMessage) -> SendResult:
        kwargs: dict[str, Any] = {"to": self._address(message.to), **self._sender(message.center_code)}
        if message.content_sid:
            # An approved WhatsApp template: Twilio fills it in; free text would be refused
            # outside the 24-hour window (error 63016).
            kwargs["content_sid"] = message.content_sid
            if message.content_variables:
                kwargs["content_variables"] = message.content_variables
        else:
            kwargs["body"] = message.body
        if self._status_callback:
            kwargs["status_callback"] = self._status_callback
        try:
            created = self._client.messages.create(**kwargs)
        except TwilioRestException as exc:
            raise _send_error(exc, self._retry_after()) from None
        except TwilioException as exc:  # e.g. an unparsable answer from a misbehaving endpoint
            raise SendError(f"Twilio answered unexpectedly: {exc}", permanent=False, ambiguous=True) from None
        except OSError as exc:
            # Timeouts and dropped connections: the request may have reached Twilio, and
            # Twilio has no idempotency key, so the next attempt asks before resending.
            raise SendError(
                f"no answer from Twilio: {type(exc).__name__}", permanent=False, ambiguous=True
            ) from None
        return SendResult(provider_message_id=created.sid)

    def _retry_after(self) -> float | None:
        http = self._client.http_client
        headers = http.last_headers() if isinstance(http, PooledHttpClient) else {}
        value = {k.lower(): v for k, v in headers.items()}.get("retry-after")
        try:
            return float(value) if value is not None else None
        except ValueError:  # an HTTP date: rare at Twilio; fall back to our own backoff
            return None

    def lookup(self, message: OutgoingMessage, since: datetime) -> SendResult | None:
        sender = self._sender(message.center_code)
        pair = {"to": self._address(message.to), "from_": sender.get("from_")}

        def ours(candidates: Iterable[MessageInstance]) -> SendResult | None:
            for candidate in candidates:
                # Twilio renders a content template itself, so its text is not ours to compare.
                if message.content_sid or same_text(candidate.body or "", message.body):
                    return SendResult(provider_message_id=candidate.sid)
            return None

        found = ours(self._client.messages.list(**pair, date_sent_after=since, limit=200))
        if found is not None:
            return found
        # A message still in Twilio's queue (a busy sender on a big day) has no date_sent yet,
        # so no DateSent filter finds it: look among the pair's newest messages too.
        newest = self._client.messages.list(**pair, limit=QUEUED_LOOKUP_LIMIT)
        return ours(m for m in newest if m.date_sent is None and m.date_created and m.date_created >= since)


# What Twilio's Smart Encoding (on by default in new Messaging Services) may have rewritten:
# typographic quotes, dashes, the ellipsis and Unicode spaces become GSM-7 look-alikes.
_GSM_LOOKALIKES = str.maketrans(
    {
        **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u02bc", "'"),
        **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033", '"'),
        **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"),
        "\u2026": "...",
        **dict.fromkeys(
            "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f", " "
        ),
        **dict.fromkeys("\u200b\u2060\ufeff"),
    }
)


def same_text(at_provider: str, ours: str) -> bool:
    """Whether the provider's copy of a message is ours, allowing for Smart Encoding's rewriting."""
    return at_provider == ours or at_provider.translate(_GSM_LOOKALIKES) == ours.translate(_GSM_LOOKALIKES)


def _send_error(exc: TwilioRestException, retry_after: float | None = None) -> SendError:
    code = exc.code if isinstance(exc.code, int) else None
    cls = classify(exc.status, code)
    known = KNOWN_ERRORS.get(code) if code is not None else None
    meaning = known.meaning if known else (exc.msg or "error")
    label = f"Twilio error {code}" if code is not None else f"Twilio HTTP {exc.status}"
    return SendError(
        f"{label}: {meaning}",
        code=str(code) if code is not None else f"http-{exc.status}",
        permanent=cls is not ErrorClass.TRANSIENT,
        # A 5xx may come after Twilio accepted the message; a 429 or 4xx never does.
        ambiguous=cls is ErrorClass.TRANSIENT and exc.status >= 500,
        retry_after=retry_after,
    )


class TwilioProvider:
    name = "twilio"
    channels = frozenset({"sms", "whatsapp"})

    def create(self, settings: Settings, channel: str) -> Channel:
        return TwilioChannel(settings.twilio, channel, settings.centers, status_callback_url(settings))


@hookimpl(trylast=True)
def careflow_channel_providers() -> list[TwilioProvider]:
    return [TwilioProvider()]
