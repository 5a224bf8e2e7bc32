"""Twilio webhooks: delivery status callbacks and inbound messages (keywords, replies).

Every request must carry a valid ``X-Twilio-Signature`` computed over the public URL
(``[web] public_url``, since a proxy changes the Host the app sees) and the form fields;
anything else gets 403 and changes nothing. Bodies and full phone numbers are never logged.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from twilio.request_validator import RequestValidator

from careflow.care import InboundReply
from careflow.channels.twilio_sms import INBOUND_PATH, STATUS_CALLBACK_PATH
from careflow.delivery.provider_status import STATUS_MAP, apply_parked, apply_report
from careflow.policies.consent import (
    REPLY_START,
    REPLY_STOP,
    Keyword,
    keyword_of,
    mask_phone,
    purposes_withdrawn_by_stop,
    record_consent,
    remember_by_address,
)
from careflow.runtime import Runtime
from careflow.storage.models import Customer, Reply, utcnow
from careflow.web.body_limit import BodyTooLarge, capped, too_large

log = logging.getLogger(__name__)

# Twilio's form posts are a few KB, but a 1,600-character Chinese SMS alone is 14.4 KB once
# percent-encoded (9 bytes a character), and WhatsApp messages may be longer: room for those.
MAX_BODY_BYTES = 64 * 1024

_XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>'


class BadRequest(Exception):
    """A signed request whose content is not what Twilio sends."""


def _twiml(message: str | None = None) -> Response:
    inner = f"<Message>{escape(message)}</Message>" if message else ""
    return Response(f"{_XML_HEAD}<Response>{inner}</Response>", media_type="application/xml")


def _signed_url(runtime: Runtime, request: Request) -> str:
    """The URL Twilio signed: the configured public URL, else the URL this request arrived at."""
    public = runtime.settings.web.public_url
    if not public:
        return str(request.url)
    url = public.rstrip("/") + request.url.path
    return f"{url}?{request.url.query}" if request.url.query else url


async def _verified_form(runtime: Runtime, request: Request) -> dict[str, str] | Response:
    """The form fields of a request Twilio signed, or the 400/403 response to answer with."""
    token = runtime.settings.twilio.auth_token
    signature = request.headers.get("X-Twilio-Signature")
    if token is None or not token.get_secret_value():
        log.error("webhook refused: twilio.auth_token is not configured, so no signature can be checked")
        return PlainTextResponse("forbidden", status_code=403)
    if not signature:
        log.warning("webhook refused: no X-Twilio-Signature (%s)", request.url.path)
        return PlainTextResponse("forbidden", status_code=403)
    try:
        raw = await capped(request, MAX_BODY_BYTES).body()
    except BodyTooLarge as exc:
        log.warning("webhook refused: body over %d bytes (%s)", exc.limit, request.url.path)
        return too_large(exc)
    try:
        text = raw.decode("utf-8")
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except (UnicodeDecodeError, ValueError):
        pairs = None
    form = dict(pairs or [])
    validator = RequestValidator(token.get_secret_value())
    if pairs is None or not validator.validate(_signed_url(runtime, request), form, signature):
        log.warning("webhook refused: invalid X-Twilio-Signature (%s)", request.url.path)
        return PlainTextResponse("forbidden", status_code=403)
    return form


def _required(form: dict[str, str], *names: str) -> list[str]:
    missing = [n for n in names if not form.get(n)]
    if missing:
        raise BadRequest(f"missing field(s): {', '.join(missing)}")
    return [form[n] for n in names]


def apply_status_callback(runtime: Runtime, form: dict[str, str]) -> str:
    """Move the event to what the provider reports, forwards only; returns what happened.

    A final report that arrives before careflow recorded the message on its event is parked
    and applied once it is (``careflow.delivery.provider_status``).
    """
    sid, reported = _required(form, "MessageSid", "MessageStatus")
    if reported.lower() not in STATUS_MAP:
        raise BadRequest(f"unknown MessageStatus {reported!r}")
    with runtime.sessions.begin() as session:
        outcome = apply_report(session, sid, reported, form.get("ErrorCode") or None)
    if outcome == "parked":
        # Recorded meanwhile (a race with the batch that sent it)? Then apply it now.
        with runtime.sessions.begin() as session:
            if apply_parked(session, [sid]):
                outcome = "applied"
    log.info("status callback %s: %s -> %s", sid, reported, outcome)
    return outcome


def _customers_with(session: Session, channel: str, address: str) -> list[Customer]:
    """The cards that hold ``address`` on the channel the message came in on.

    A WhatsApp message is matched on the card's WhatsApp number, which may differ from its
    phone (or be the only number it has); an SMS on the phone.
    """
    column = Customer.whatsapp if channel == "whatsapp" else Customer.phone
    return list(session.scalars(select(Customer).where(column == address).order_by(Customer.id)))


def handle_inbound(runtime: Runtime, form: dict[str, str], now: datetime) -> str | None:
    """Store the reply, apply keywords to every card with that address; returns a TwiML reply text."""
    sid, sender = _required(form, "MessageSid", "From")
    body = form.get("Body", "")
    channel = "whatsapp" if sender.startswith("whatsapp:") else "sms"
    phone = sender.removeprefix("whatsapp:")
    keyword = keyword_of(body)
    centers = runtime.settings.centers
    answer: str | None = None
    with runtime.sessions.begin() as session:
        if session.scalar(select(Reply.id).where(Reply.provider_message_id == sid)) is not None:
            log.info("inbound %s from %s: already stored (repeated webhook)", sid, mask_phone(phone))
            return _help_text(runtime, session, channel, phone) if keyword is Keyword.HELP else None
        customers = _customers_with(session, channel, phone)
        first = customers[0] if customers else None
        reply = Reply(
            provider_message_id=sid,
            customer_id=first.id if first else None,
            center_id=first.center_id if first else None,
            channel=channel,
            from_address=phone,
            body=body,
            keyword=str(keyword) if keyword else None,
            received_at=now,
        )
        try:
            with session.begin_nested():
                session.add(reply)
        except IntegrityError:  # the same webhook, processed concurrently by another request
            return None
        for customer in customers:
            purposes = purposes_withdrawn_by_stop(centers.get(customer.center.code))
            if keyword in (Keyword.STOP, Keyword.START):
                record_consent(
                    session,
                    customer.id,
                    channel,
                    purposes,
                    granted=keyword is Keyword.START,
                    source=REPLY_START if keyword is Keyword.START else REPLY_STOP,
                    actor="customer",
                    effective_at=now,
                    address=phone,
                )
        if not customers and keyword in (Keyword.STOP, Keyword.START):
            # No card has this number yet: a card imported later must not be granted what
            # its owner withdrew from it.
            purposes = purposes_withdrawn_by_stop(centers.get(runtime.settings.default_center))
            remember_by_address(
                session,
                channel,
                phone,
                [str(p) for p in purposes],
                granted=keyword is Keyword.START,
                source=REPLY_START if keyword is Keyword.START else REPLY_STOP,
                now=now,
            )
        if keyword is Keyword.HELP:
            answer = _help_text(runtime, session, channel, phone)
        if keyword is None:
            _announce(runtime, session, reply)
    log.info(
        "inbound %s from %s: %s, %d matching customer(s)",
        sid,
        mask_phone(phone),
        keyword or "reply",
        len(customers),
    )
    return answer


def _help_text(runtime: Runtime, session: Session, channel: str, address: str) -> str:
    customers = _customers_with(session, channel, address)
    code = customers[0].center.code if customers else runtime.settings.default_center
    center = runtime.settings.centers.get(code) or runtime.settings.centers[runtime.settings.default_center]
    return center.help_text


def _announce(runtime: Runtime, session: Session, reply: Reply) -> None:
    """Plugins react inside the webhook's transaction; a failing reaction is rolled back alone."""
    hook = runtime.registry.pm.hook.careflow_reply_received
    if not hook.get_hookimpls():
        return
    inbound = InboundReply(
        customer_id=reply.customer_id,
        center_id=reply.center_id,
        channel=reply.channel,
        from_address=reply.from_address,
        body=reply.body,
        received_at=reply.received_at,
        provider_message_id=reply.provider_message_id,
    )
    savepoint = session.begin_nested()
    try:
        hook(session=session, reply=inbound)
        savepoint.commit()
    except Exception:
        savepoint.rollback()
        log.exception("a careflow_reply_received hook failed for inbound %s", reply.provider_message_id)


def _endpoint(runtime: Runtime, handle: Callable[[dict[str, str]], Response]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        verified = await _verified_form(runtime, request)
        if isinstance(verified, Response):
            return verified
        try:
            return await run_in_threadpool(handle, verified)
        except BadRequest as exc:
            log.warning("webhook %s: bad request: %s", request.url.path, exc)
            return PlainTextResponse(f"bad request: {exc}", status_code=400)

    return endpoint


def webhook_routes(runtime: Runtime) -> list[BaseRoute]:
    """The Twilio webhook routes, at the paths sends and the Twilio console point to."""

    def status(form: dict[str, str]) -> Response:
        return PlainTextResponse(apply_status_callback(runtime, form))

    def inbound(form: dict[str, str]) -> Response:
        return _twiml(handle_inbound(runtime, form, utcnow()))

    return [
        Route(STATUS_CALLBACK_PATH, _endpoint(runtime, status), methods=["POST"]),
        Route(INBOUND_PATH, _endpoint(runtime, inbound), methods=["POST"]),
    ]
