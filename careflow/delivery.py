"""Deliver one care event: claim it, render it, send it, record the outcome. Broker-agnostic."""

from __future__ import annotations

import enum
import logging
import time
from contextlib import suppress
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from careflow.channels.base import OutgoingMessage, SendResult
from careflow.channels.whatsapp_content import ContentTemplate, content_template
from careflow.consent import withdraw_for_carrier_opt_out
from careflow.email_content import with_footer
from careflow.errors import SendError, TemplateError
from careflow.models import CareEvent, Center, Customer, EventStatus, Purpose, utcnow
from careflow.policies import consent_granted
from careflow.rate_limit import back_off, pace
from careflow.recovery import recover_stuck_sends
from careflow.runtime import Runtime
from careflow.template_lint import lint_refusal
from careflow.templates import Rendered
from careflow.unsubscribe_links import unsubscribe_url

log = logging.getLogger(__name__)

CARRIER_OPT_OUT = "21610"  # Twilio: the recipient replied STOP to this sender
RATE_LIMITED = frozenset({"20429", "http-429"})
DEAD_LETTER = "dead-letter"  # error_code of an event whose attempts all died without an outcome
# Look further back than the event's creation: clocks of hosts and provider differ a little.
LOOKUP_MARGIN = timedelta(minutes=5)
# How long a worker keeps trying to record a send the provider accepted before leaving it
# to recovery (which asks the provider instead of sending again).
RECORD_PATIENCE_SECONDS = 30.0


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


def _set_status(
    session: Session,
    event_id: int,
    attempt: int,
    status: EventStatus,
    *,
    also_from: frozenset[EventStatus] = frozenset(),
    **values: Any,
) -> bool:
    """Leave ``sending`` for a final (or planned) status; only the claimant of ``attempt`` can.

    The attempt number is a fencing token: a worker whose claim was recovered and handed to
    another worker (a new attempt) can no longer overwrite that worker's outcome.
    """
    result = session.execute(
        update(CareEvent)
        .where(
            CareEvent.id == event_id,
            CareEvent.status.in_({EventStatus.SENDING, *also_from}),
            CareEvent.attempts == attempt,
        )
        .values(status=status, **values)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


def _finish(runtime: Runtime, event_id: int, attempt: int, status: EventStatus, **values: Any) -> bool:
    with runtime.sessions.begin() as session:
        return _set_status(session, event_id, attempt, status, **values)


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
    claimed = _claim_attempt(runtime, event_id, now or utcnow())
    if isinstance(claimed, Outcome):
        return claimed
    try:
        prepared = _prepare(runtime, event_id, claimed)
    except Exception as exc:  # e.g. a plugin's template-context hook raised
        log.exception("event %s: preparing the message failed", event_id)
        # Nothing reached the provider; an earlier unclear attempt keeps its reconcile flag.
        failure = SendError(f"preparing the message failed: {type(exc).__name__}: {exc}", permanent=False)
        return _failed_attempt(runtime, event_id, claimed, failure, needs_reconcile=None)
    if isinstance(prepared, Outcome):
        return prepared
    message, needs_reconcile, created = prepared
    # No transaction is open while the provider is called: a slow send never holds a lock.
    return _send(runtime, event_id, message, attempt=claimed, needs_reconcile=needs_reconcile, since=created)


def _claim_attempt(runtime: Runtime, event_id: int, now: datetime) -> Outcome | int:
    """Claim the event and count the attempt in a committed transaction of its own.

    The count is durable *before* anything that could kill the process (rendering, plugin
    hooks, the provider call), so a message that crashes its worker every time is bounded:
    once the attempts are used up it is dead-lettered here instead of being tried again.
    """
    max_attempts = runtime.settings.delivery.max_attempts
    with runtime.sessions.begin() as session:
        if not claim(session, event_id, now):
            # A redelivered or duplicate message: whoever holds or finished the event decides.
            status = session.scalar(select(CareEvent.status).where(CareEvent.id == event_id))
            log.info("event %s: skipped (status %s)", event_id, status)
            return Outcome.SKIPPED
        row = session.execute(
            select(CareEvent.attempts, CareEvent.needs_reconcile, CareEvent.status_reason).where(
                CareEvent.id == event_id
            )
        ).one()
        attempt = int(row.attempts)
        if attempt <= max_attempts:
            return attempt
        # Every earlier attempt ended without an outcome: the worker died or was killed.
        reason = (
            f"dead-lettered: {attempt - 1} attempts ended without an outcome "
            f"(the worker stopped or crashed each time); last note: {row.status_reason or '-'}"
        )
        if row.needs_reconcile:
            reason += "; the last attempt may have reached the provider, check before retrying"
        _set_status(
            session, event_id, attempt, EventStatus.FAILED, status_reason=reason, error_code=DEAD_LETTER
        )
        log.error("event %s: %s", event_id, reason)
        return Outcome.FAILED


def _prepare(
    runtime: Runtime, event_id: int, attempt: int
) -> Outcome | tuple[OutgoingMessage, bool, datetime]:
    """Re-check consent and render (once; the body is stored), in one short transaction."""
    with runtime.sessions.begin() as session:
        event = session.get(CareEvent, event_id)
        assert event is not None
        customer = event.customer
        center = customer.center
        if not event.channel or not event.recipient:
            _set_status(session, event_id, attempt, EventStatus.SUPPRESSED, status_reason="no channel chosen")
            return Outcome.SUPPRESSED
        # An opt-out that arrived after planning still wins.
        if not consent_granted(session, customer.id, event.channel, event.purpose):
            _set_status(
                session,
                event_id,
                attempt,
                EventStatus.SUPPRESSED,
                status_reason=f"{event.purpose} consent on {event.channel} withdrawn before sending",
            )
            return Outcome.SUPPRESSED
        if event.body is None:
            refusal = lint_refusal(runtime, event, center)
            if refusal is not None:  # a template that fails lint is never used for a send
                _set_status(
                    session,
                    event_id,
                    attempt,
                    EventStatus.FAILED,
                    status_reason=refusal,
                    error_code="template-lint",
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
            _set_status(
                session, event_id, attempt, EventStatus.FAILED, status_reason=str(exc), error_code="template"
            )
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
        return message, event.needs_reconcile, event.created_at


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
    attempt: int,
    needs_reconcile: bool,
    since: datetime,
) -> Outcome:
    channel = runtime.channel(message.channel)
    try:
        result: SendResult | None = None
        if needs_reconcile:
            # The last attempt may have gone through: ask the provider before sending again.
            result = channel.lookup(message, since - LOOKUP_MARGIN)
            if result is not None:
                log.info("event %s: found at the provider after an unclear attempt; not resending", event_id)
        if result is None:
            pace(runtime, message.channel)  # the sender's rate limit, shared by every worker
            result = channel.send(message)
    except SendError as exc:
        if exc.code in RATE_LIMITED:
            waited = back_off(runtime, message.channel, attempt, exc.retry_after)
            log.info("event %s: rate limited by the provider; sender held for %.1f s", event_id, waited)
        return _failed_attempt(runtime, event_id, attempt, exc, needs_reconcile=needs_reconcile)
    except Exception as exc:  # a provider SDK bug must not leave the row in "sending"
        log.exception("event %s: unexpected error from channel %s", event_id, message.channel)
        unexpected = SendError(f"{type(exc).__name__}: {exc}", permanent=False, ambiguous=True)
        return _failed_attempt(runtime, event_id, attempt, unexpected, needs_reconcile=needs_reconcile)
    except BaseException:
        # Interrupted mid-call (Dramatiq's time limit, shutdown): the provider may have the
        # message, so the next attempt must ask first. Best effort: the process may be dying.
        with suppress(Exception):
            _finish(
                runtime,
                event_id,
                attempt,
                EventStatus.PLANNED,
                status_reason=f"attempt {attempt}: interrupted while sending",
                needs_reconcile=True,
            )
        raise
    _record_sent(runtime, event_id, attempt, result)
    _announce_delivered(runtime, event_id)
    return Outcome.SENT


def _failed_attempt(
    runtime: Runtime, event_id: int, attempt: int, exc: SendError, *, needs_reconcile: bool | None
) -> Outcome:
    """Record a failed attempt: permanent errors and the last attempt fail, others retry.

    ``needs_reconcile=None`` means this attempt never reached the provider: the flag is kept.
    """
    if exc.permanent:
        with runtime.sessions.begin() as session:
            failed = _set_status(
                session, event_id, attempt, EventStatus.FAILED, status_reason=str(exc), error_code=exc.code
            )
            if failed and exc.code == CARRIER_OPT_OUT:
                # The handset opted out at the carrier: never try this channel again.
                event = session.get(CareEvent, event_id)
                assert event is not None and event.channel is not None
                withdraw_for_carrier_opt_out(session, event.customer_id, event.channel)
        return Outcome.FAILED
    if attempt >= runtime.settings.delivery.max_attempts:
        reason = f"gave up after {attempt} attempts: {exc}"
        if exc.ambiguous or needs_reconcile:
            reason += " (the last attempt may have reached the provider)"
        _finish(runtime, event_id, attempt, EventStatus.FAILED, status_reason=reason, error_code=exc.code)
        return Outcome.FAILED
    flag = {} if needs_reconcile is None else {"needs_reconcile": needs_reconcile or exc.ambiguous}
    _finish(
        runtime,
        event_id,
        attempt,
        EventStatus.PLANNED,
        status_reason=f"attempt {attempt}: {exc}",
        error_code=exc.code,
        **flag,
    )
    return Outcome.RETRY


def _record_sent(runtime: Runtime, event_id: int, attempt: int, result: SendResult) -> None:
    """The provider has the message: record that, riding out a database that is briefly away.

    If the database stays away the row is left in ``sending`` and recovery reconciles it with
    the provider later, which finds the message instead of sending it again.
    """
    delay = 0.2
    deadline = time.monotonic() + RECORD_PATIENCE_SECONDS
    while True:
        try:
            with runtime.sessions.begin() as session:
                recorded = _set_status(
                    session,
                    event_id,
                    attempt,
                    EventStatus.SENT,
                    # Recovery may have put the row back to planned meanwhile; same attempt, so
                    # nobody else has claimed it since and the outcome is still ours to record.
                    also_from=frozenset({EventStatus.PLANNED}),
                    provider_message_id=result.provider_message_id,
                    sent_at=utcnow(),
                    status_reason=None,
                    error_code=None,
                    needs_reconcile=False,
                )
            if not recorded:
                log.warning(
                    "event %s: sent, but attempt %s no longer holds the row; the next claimant "
                    "will find the message at the provider",
                    event_id,
                    attempt,
                )
            return
        except DBAPIError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("event %s: sent, but recording it failed (%s); retrying", event_id, exc.orig)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


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
    recover_stuck_sends(runtime, older_than=stuck_after)
    with runtime.sessions() as session:
        query = select(CareEvent.id).where(CareEvent.status == EventStatus.PLANNED)
        if day is not None:
            query = query.where(CareEvent.due_date <= day)
        return list(session.scalars(query.order_by(CareEvent.id)))
