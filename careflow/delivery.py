"""Deliver one care event: claim it, render it, send it, record the outcome. Broker-agnostic."""

from __future__ import annotations

import enum
import logging
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from careflow.channels.base import OutgoingMessage, SendResult
from careflow.channels.whatsapp_content import ContentTemplate, content_template
from careflow.consent import withdraw_for_carrier_opt_out
from careflow.email_content import with_footer
from careflow.errors import SendError, TemplateError
from careflow.models import CareEvent, Center, Customer, EventStatus, Purpose, utcnow
from careflow.policies import consent_granted
from careflow.rate_limit import back_off, pace
from careflow.runtime import Runtime
from careflow.template_lint import lint_refusal
from careflow.templates import Rendered
from careflow.unsubscribe_links import unsubscribe_url

log = logging.getLogger(__name__)

CARRIER_OPT_OUT = "21610"  # Twilio: the recipient replied STOP to this sender
RATE_LIMITED = frozenset({"20429", "http-429"})


class Outcome(enum.StrEnum):
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    RETRY = "retry"  # transient failure: the broker should redeliver with backoff
    SKIPPED = "skipped"  # someone else holds or finished the event: nothing to do


def claim(session: Session, event_id: int, now: datetime) -> bool:
    """Compare-and-set planned -> sending; exactly one caller wins, however many race."""
    result = session.execute(
        update(CareEvent)
        .where(CareEvent.id == event_id, CareEvent.status == EventStatus.PLANNED)
        .values(status=EventStatus.SENDING, attempts=CareEvent.attempts + 1, claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


def _set_status(session: Session, event_id: int, status: EventStatus, **values: Any) -> bool:
    """Leave ``sending`` for a final (or planned) status; only the claimant can do so."""
    result = session.execute(
        update(CareEvent)
        .where(CareEvent.id == event_id, CareEvent.status == EventStatus.SENDING)
        .values(status=status, **values)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


def _finish(runtime: Runtime, event_id: int, status: EventStatus, **values: Any) -> bool:
    with runtime.sessions.begin() as session:
        return _set_status(session, event_id, status, **values)


def template_variables(
    event: CareEvent, customer: Customer, center: Center, runtime: Runtime
) -> dict[str, Any]:
    """Plain data only: the sandbox never sees ORM objects or anything with behaviour."""
    birthday = None
    if customer.birth_month and customer.birth_day:
        birthday = {"month": customer.birth_month, "day": customer.birth_day, "year": customer.birth_year}
    center_cfg = runtime.settings.centers.get(center.code)
    variables: dict[str, Any] = {
        "customer": {
            "name": customer.name,
            "external_id": customer.external_id,
            "city": customer.city,
            "birthday": birthday,
        },
        "center": {
            "code": center.code,
            "name": center.name,
            "help_text": center_cfg.help_text if center_cfg else "",
        },
        "occasion": event.occasion,
        "due_date": event.due_date.isoformat(),
        **event.context,
    }
    for extra in runtime.registry.pm.hook.careflow_template_context(event=event, customer=customer):
        if extra:
            variables.update(extra)
    return variables


def render_event(
    runtime: Runtime, event: CareEvent, customer: Customer, center: Center
) -> tuple[str, str | None]:
    rendered = render_event_parts(runtime, event, customer, center)
    return rendered.body, rendered.subject


def render_event_parts(runtime: Runtime, event: CareEvent, customer: Customer, center: Center) -> Rendered:
    """Render the event's template; an e-mail also gets its HTML part and the center's footer."""
    rendered = runtime.templates.render(
        event.template,
        event.channel or "sms",
        locale=event.locale,
        center_code=center.code,
        center_locale=center.locale,
        variables=template_variables(event, customer, center, runtime),
        marketing=event.purpose == Purpose.MARKETING,
    )
    center_cfg = runtime.settings.centers.get(center.code)
    if event.channel == "email" and rendered.subject is None:
        # Written from an SMS template: the center's name is an honest subject line.
        rendered = replace(rendered, subject=center.name)
    if event.channel == "email" and rendered.html is not None and center_cfg is not None:
        text, html = with_footer(
            rendered.body,
            rendered.html,
            center=center_cfg,
            locale=rendered.locale,
            unsubscribe_url=unsubscribe_url(runtime.settings, customer.id),
        )
        rendered = replace(rendered, body=text, html=html)
    return rendered


def deliver(runtime: Runtime, event_id: int, *, now: datetime | None = None) -> Outcome:
    """The whole life of one delivery attempt. Safe to call twice for the same event."""
    prepared = _prepare(runtime, event_id, now or utcnow())
    if isinstance(prepared, Outcome):
        return prepared
    message, attempts, needs_reconcile, created = prepared
    # No transaction is open while the provider is called: a slow send never holds a lock.
    return _send(
        runtime, event_id, message, attempts=attempts, needs_reconcile=needs_reconcile, since=created
    )


def _prepare(
    runtime: Runtime, event_id: int, now: datetime
) -> Outcome | tuple[OutgoingMessage, int, bool, datetime]:
    """Claim, re-check consent and render, all in one short transaction."""
    with runtime.sessions.begin() as session:
        if not claim(session, event_id, now):
            return Outcome.SKIPPED
        event = session.get(CareEvent, event_id)
        assert event is not None
        customer = event.customer
        center = customer.center
        if not event.channel or not event.recipient:
            _set_status(session, event_id, EventStatus.SUPPRESSED, status_reason="no channel chosen")
            return Outcome.SUPPRESSED
        # An opt-out that arrived after planning still wins.
        if not consent_granted(session, customer.id, event.channel, event.purpose):
            _set_status(
                session,
                event_id,
                EventStatus.SUPPRESSED,
                status_reason=f"{event.purpose} consent on {event.channel} withdrawn before sending",
            )
            return Outcome.SUPPRESSED
        if event.body is None:
            refusal = lint_refusal(runtime, event, center)
            if refusal is not None:  # a template that fails lint is never used for a send
                _set_status(
                    session, event_id, EventStatus.FAILED, status_reason=refusal, error_code="template-lint"
                )
                return Outcome.FAILED
        try:
            if event.body is None:
                rendered = render_event_parts(runtime, event, customer, center)
                # Stored before sending so that every retry and every reconciliation sends and
                # looks for exactly the same text, even if a marketer edits the template meanwhile.
                event.body, event.subject, event.html_body = rendered.body, rendered.subject, rendered.html
            content = _whatsapp_content(runtime, event, customer, center)
        except TemplateError as exc:
            _set_status(session, event_id, EventStatus.FAILED, status_reason=str(exc), error_code="template")
            return Outcome.FAILED
        message = OutgoingMessage(
            event_id=event.id,
            channel=event.channel,
            to=event.recipient,
            body=event.body or "",
            subject=event.subject,
            center_code=center.code,
            html_body=event.html_body,
            unsubscribe_url=unsubscribe_url(runtime.settings, customer.id)
            if event.channel == "email"
            else None,
            locale=event.locale,
            content_sid=content.content_sid if content else None,
            content_variables=content.content_variables if content else None,
        )
        return message, event.attempts, event.needs_reconcile, event.created_at


def _whatsapp_content(
    runtime: Runtime, event: CareEvent, customer: Customer, center: Center
) -> ContentTemplate | None:
    """The approved WhatsApp template named by the care template's sidecar, if it has one."""
    if event.channel != "whatsapp":
        return None
    return content_template(
        runtime.templates,
        event.template,
        locale=event.locale,
        center_code=center.code,
        center_locale=center.locale,
        variables=template_variables(event, customer, center, runtime),
    )


def _send(
    runtime: Runtime,
    event_id: int,
    message: OutgoingMessage,
    *,
    attempts: int,
    needs_reconcile: bool,
    since: datetime,
) -> Outcome:
    channel = runtime.channel(message.channel)
    max_attempts = runtime.settings.delivery.max_attempts
    try:
        result: SendResult | None = None
        if needs_reconcile:
            # The last attempt may have gone through: ask the provider before sending again.
            result = channel.lookup(message, since - timedelta(minutes=5))
            if result is not None:
                log.info("event %s: found at the provider after an unclear attempt; not resending", event_id)
        if result is None:
            pace(runtime, message.channel)  # the sender's rate limit, shared by every worker
            result = channel.send(message)
    except SendError as exc:
        if exc.permanent:
            with runtime.sessions.begin() as session:
                failed = _set_status(
                    session, event_id, EventStatus.FAILED, status_reason=str(exc), error_code=exc.code
                )
                if failed and exc.code == CARRIER_OPT_OUT:
                    # The handset opted out at the carrier: never try this channel again.
                    event = session.get(CareEvent, event_id)
                    assert event is not None
                    withdraw_for_carrier_opt_out(session, event.customer_id, message.channel)
            return Outcome.FAILED
        if exc.code in RATE_LIMITED:
            waited = back_off(runtime, message.channel, attempts, exc.retry_after)
            log.info("event %s: rate limited by the provider; sender held for %.1f s", event_id, waited)
        if attempts >= max_attempts:
            reason = f"gave up after {attempts} attempts: {exc}"
            if exc.ambiguous:
                reason += " (the last attempt may have reached the provider)"
            _finish(runtime, event_id, EventStatus.FAILED, status_reason=reason, error_code=exc.code)
            return Outcome.FAILED
        _finish(
            runtime,
            event_id,
            EventStatus.PLANNED,
            status_reason=f"attempt {attempts}: {exc}",
            error_code=exc.code,
            needs_reconcile=needs_reconcile or exc.ambiguous,
        )
        return Outcome.RETRY
    except Exception as exc:  # a provider SDK bug must not leave the row in "sending"
        log.exception("event %s: unexpected error from channel %s", event_id, message.channel)
        _finish(
            runtime,
            event_id,
            EventStatus.PLANNED,
            status_reason=f"attempt {attempts}: {type(exc).__name__}: {exc}",
            needs_reconcile=True,
        )
        return Outcome.RETRY
    _finish(
        runtime,
        event_id,
        EventStatus.SENT,
        provider_message_id=result.provider_message_id,
        sent_at=utcnow(),
        status_reason=None,
        error_code=None,
        needs_reconcile=False,
    )
    _announce_delivered(runtime, event_id)
    return Outcome.SENT


def _announce_delivered(runtime: Runtime, event_id: int) -> None:
    hook = runtime.registry.pm.hook.careflow_event_delivered
    if not hook.get_hookimpls():
        return
    with runtime.sessions() as session:
        event = session.get(CareEvent, event_id)
        if event is None:
            return
        session.expunge(event)
    try:  # outside any transaction: a reaction may write with its own session
        hook(event=event)
    except Exception:
        log.exception("a careflow_event_delivered hook failed for event %s", event_id)


def stale_event_ids(
    runtime: Runtime, *, now: datetime, stuck_after: timedelta, day: date | None = None
) -> list[int]:
    """Events to (re)queue: planned ones, and ones stuck in ``sending`` by a worker that died.

    A stuck event goes back to ``planned`` flagged for reconciliation, so the provider is
    asked whether it already has the message before anything is sent again.
    """
    with runtime.sessions.begin() as session:
        session.execute(
            update(CareEvent)
            .where(CareEvent.status == EventStatus.SENDING, CareEvent.claimed_at < now - stuck_after)
            .values(
                status=EventStatus.PLANNED,
                needs_reconcile=True,
                status_reason="recovered from a worker that stopped mid-send",
            )
            .execution_options(synchronize_session=False)
        )
        query = select(CareEvent.id).where(CareEvent.status == EventStatus.PLANNED)
        if day is not None:
            query = query.where(CareEvent.due_date <= day)
        return list(session.scalars(query.order_by(CareEvent.id)))
