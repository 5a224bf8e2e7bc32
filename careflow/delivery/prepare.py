"""Prepare claimed events: re-check consent, expiry and quiet hours; render once and store the body."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, Text, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from careflow.channels.base import OutgoingMessage
from careflow.config import CenterSettings
from careflow.customers.segments import prefetch_segments
from careflow.delivery.outcomes import TIMING_OUTCOMES, not_now
from careflow.delivery.results import BatchResult, Outcome
from careflow.delivery.rows import set_status, still_held, update_each
from careflow.errors import SendError, TemplateError
from careflow.policies.channel_choice import load_consents
from careflow.policies.timing import customer_zone, send_timing
from careflow.rendering.event import render_event_parts, template_variables
from careflow.rendering.lint import lint_refusal
from careflow.rendering.unsubscribe_links import unsubscribe_url
from careflow.rendering.whatsapp_content import ContentTemplate, content_template
from careflow.storage.models import CareEvent, Center, EventStatus

if TYPE_CHECKING:
    from careflow.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A claimed event ready for its provider call, with what the checks at the send need."""

    event_id: int
    attempt: int
    message: OutgoingMessage
    needs_reconcile: bool
    since: datetime
    customer_id: int
    purpose: str
    zone: ZoneInfo  # the customer's, for quiet hours at the moment of the send
    center: CenterSettings | None
    expires_at: datetime | None
    rendered_now: bool = False  # its body was rendered by this attempt and must be stored


def prepare_one(
    runtime: Runtime, event_id: int, attempt: int
) -> Outcome | tuple[OutgoingMessage, bool, datetime]:
    """Prepare one claimed event: its message, or the outcome when it must not be sent."""
    result = BatchResult()
    prepared, broken = prepare_many(runtime, {event_id: attempt}, result, runtime.now())
    if broken:
        raise broken[0][2]
    if not prepared:
        return result.outcomes[event_id]
    return prepared[0].message, prepared[0].needs_reconcile, prepared[0].since


def prepare_many(
    runtime: Runtime, claimed: dict[int, int], result: BatchResult, now: datetime
) -> tuple[list[Prepared], list[tuple[int, int, SendError]]]:
    """Re-check consent, expiry and quiet hours at ``now``; render (once; the body is stored).

    One short transaction for the batch.

    Returns the messages to send, and the events whose preparation raised (a plugin's
    template-context hook, say): those are retried like a transient failure.
    """
    prepared: list[Prepared] = []
    broken: list[tuple[int, int, SendError]] = []
    with runtime.sessions.begin() as session:
        events = session.scalars(
            select(CareEvent)
            .where(CareEvent.id.in_(claimed))
            .options(joinedload(CareEvent.customer))
            .order_by(CareEvent.id)
        ).all()
        customer_ids = {event.customer_id for event in events}
        granted = load_consents(session, customer_ids)
        prefetch_segments(session, customer_ids)  # what every template's context reads
        # Nothing is flushed per event: bodies are stored together at the end (_store_bodies).
        with session.no_autoflush, runtime.templates.batch():
            for event in events:
                attempt = claimed[event.id]
                try:
                    item = _prepare_event(runtime, session, event, attempt, granted, now)
                except Exception as exc:
                    if isinstance(exc, DBAPIError):
                        raise  # the transaction is gone: the whole batch is retried
                    log.exception("event %s: preparing the message failed", event.id)
                    failure = SendError(
                        f"preparing the message failed: {type(exc).__name__}: {exc}", permanent=False
                    )
                    broken.append((event.id, attempt, failure))
                    continue
                if isinstance(item, Outcome):
                    result.outcomes[event.id] = item
                else:
                    prepared.append(item)
        _store_bodies(session, [item for item in prepared if item.rendered_now])
    return prepared, broken


def _store_bodies(session: Session, items: Sequence[Prepared]) -> None:
    """Store rendered bodies before anything is sent, fenced by each event's attempt.

    Stored so that every retry and every reconciliation sends and looks for exactly the
    same text, even if a marketer edits the template meanwhile.
    """
    if not items:
        return
    rows = [
        (item.event_id, item.attempt, item.message.body, item.message.subject, item.message.html_body)
        for item in items
    ]
    update_each(
        session,
        {"event_id": Integer(), "attempt": Integer(), "body": Text(), "subject": Text(), "html_body": Text()},
        rows,
        where=still_held,
        values=lambda given: {
            "body": given["body"],
            "subject": given["subject"],
            "html_body": given["html_body"],
        },
    )


def _prepare_event(
    runtime: Runtime,
    session: Session,
    event: CareEvent,
    attempt: int,
    granted: Mapping[tuple[int, str, str], bool],
    now: datetime,
) -> Outcome | Prepared:
    event_id = event.id
    customer = event.customer
    center = customer.center
    if not event.channel or not event.recipient:
        set_status(session, event_id, attempt, EventStatus.SUPPRESSED, status_reason="no channel chosen")
        return Outcome.SUPPRESSED
    # An opt-out that arrived after planning still wins.
    if not granted.get((customer.id, event.channel, event.purpose), False):
        set_status(
            session,
            event_id,
            attempt,
            EventStatus.SUPPRESSED,
            status_reason=f"{event.purpose} consent on {event.channel} withdrawn before sending",
        )
        return Outcome.SUPPRESSED
    # Expiry and quiet hours hold at the send too: a retry, a backlog behind a slow sender or
    # a message whose broker copy was lost and re-queued may reach a worker hours later.
    zone, center_cfg = customer_zone(customer), runtime.settings.centers.get(center.code)
    timing = send_timing(now, zone, center_cfg, event.expires_at)
    if timing.status is not EventStatus.PLANNED:
        set_status(session, event_id, attempt, timing.status, **not_now(timing, attempt))
        return TIMING_OUTCOMES[timing.status]
    rendered_now = False
    if event.body is None:
        refusal = lint_refusal(runtime, event, center)
        if refusal is not None:  # a template that fails lint is never used for a send
            set_status(
                session,
                event_id,
                attempt,
                EventStatus.FAILED,
                status_reason=refusal,
                error_code="template-lint",
            )
            return Outcome.FAILED
    try:
        # Once per event: the body and a WhatsApp content template's variables share them.
        variables = (
            template_variables(event, customer, center, runtime)
            if event.body is None or event.channel == "whatsapp"
            else None
        )
        if event.body is None:
            rendered = render_event_parts(runtime, event, customer, center, variables=variables)
            # Stored before sending so that every retry and every reconciliation sends and
            # looks for exactly the same text, even if a marketer edits the template meanwhile.
            # (Written below for the whole batch at once, in _store_bodies.)
            for attribute, value in (
                ("body", rendered.body),
                ("subject", rendered.subject),
                ("html_body", rendered.html),
            ):
                set_committed_value(event, attribute, value)
            rendered_now = True
        content = _whatsapp_content(runtime, event, center, variables)
    except TemplateError as exc:
        set_status(
            session, event_id, attempt, EventStatus.FAILED, status_reason=str(exc), error_code="template"
        )
        return Outcome.FAILED
    message = OutgoingMessage(
        event_id=event_id,
        channel=event.channel,
        to=event.recipient,
        body=event.body or "",
        subject=event.subject,
        center_code=center.code,
        html_body=event.html_body,
        unsubscribe_url=unsubscribe_url(runtime.settings, customer.id) if event.channel == "email" else None,
        locale=event.locale,
        content_sid=content.content_sid if content else None,
        content_variables=content.content_variables if content else None,
    )
    return Prepared(
        event_id,
        attempt,
        message,
        event.needs_reconcile,
        event.created_at,
        customer.id,
        event.purpose,
        zone,
        center_cfg,
        event.expires_at,
        rendered_now,
    )


def _whatsapp_content(
    runtime: Runtime, event: CareEvent, center: Center, variables: Mapping[str, Any] | None
) -> ContentTemplate | None:
    """The approved WhatsApp template named by the care template's sidecar, if it has one.

    ``variables`` are the event's template variables, computed once for its body and this.
    """
    if event.channel != "whatsapp":
        return None
    assert variables is not None  # computed for every WhatsApp event
    return content_template(
        runtime.templates,
        event.template,
        locale=event.locale,
        center_code=center.code,
        center_locale=center.locale,
        variables=variables,
    )
