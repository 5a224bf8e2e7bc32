"""Record what became of each attempt: sent, failed, retried or handed back; tell the plugins.

A send the provider accepted is recorded even through a database that is briefly away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, Text, or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from careflow.channels.base import SendResult
from careflow.delivery.provider_status import CARRIER_OPT_OUT, apply_parked
from careflow.delivery.results import Outcome, ids_text
from careflow.delivery.rows import EVENTS, finish, set_status, update_each
from careflow.errors import SendError
from careflow.policies.consent import withdraw_for_carrier_opt_out
from careflow.policies.rows import Decision
from careflow.storage.models import CareEvent, EventStatus, utcnow

if TYPE_CHECKING:
    from careflow.delivery.prepare import Prepared
    from careflow.runtime import Runtime

log = logging.getLogger(__name__)

# How long a worker keeps trying to record a send the provider accepted before leaving it
# to recovery (which asks the provider instead of sending again).
RECORD_PATIENCE_SECONDS = 30.0
# What an event that may not go out now (``not_now``) comes to.
TIMING_OUTCOMES = {EventStatus.DEFERRED: Outcome.DEFERRED, EventStatus.EXPIRED: Outcome.EXPIRED}


def not_now(decision: Decision, attempt: int) -> dict[str, Any]:
    """An event that may not go out now (quiet hours, or its occasion passed): handed back uncounted.

    Not an attempt: a deferred one is released when its window opens, like a planned deferral.
    """
    return {
        "status_reason": decision.reason,
        "not_before": decision.not_before,
        "attempts": attempt - 1,
        "claimed_at": None,
    }


def failed_attempt(
    runtime: Runtime, event_id: int, attempt: int, exc: SendError, *, needs_reconcile: bool | None
) -> Outcome:
    """Record a failed attempt: permanent errors and the last attempt fail, others retry.

    ``needs_reconcile=None`` means this attempt never reached the provider: the flag is kept.
    """
    if exc.permanent:
        with runtime.sessions.begin() as session:
            failed = set_status(
                session, event_id, attempt, EventStatus.FAILED, status_reason=str(exc), error_code=exc.code
            )
            if failed and exc.code == CARRIER_OPT_OUT:
                # The handset opted out at the carrier: never try this channel again.
                event = session.get(CareEvent, event_id)
                assert event is not None and event.channel is not None
                withdraw_for_carrier_opt_out(session, event.customer_id, event.channel, event.recipient)
        return Outcome.FAILED
    if attempt >= runtime.settings.delivery.max_attempts:
        reason = f"gave up after {attempt} attempts: {exc}"
        if exc.ambiguous or needs_reconcile:
            reason += " (the last attempt may have reached the provider)"
        finish(runtime, event_id, attempt, EventStatus.FAILED, status_reason=reason, error_code=exc.code)
        return Outcome.FAILED
    flag = {} if needs_reconcile is None else {"needs_reconcile": needs_reconcile or exc.ambiguous}
    finish(
        runtime,
        event_id,
        attempt,
        EventStatus.PLANNED,
        status_reason=f"attempt {attempt}: {exc}",
        error_code=exc.code,
        **flag,
    )
    return Outcome.RETRY


def record_sent_many(
    runtime: Runtime,
    accepted: Sequence[tuple[Prepared, SendResult]],
    *,
    patience: float = RECORD_PATIENCE_SECONDS,
) -> None:
    """The provider has these messages: record that, riding out a database that is briefly away.

    If the database stays away the rows are left in ``sending`` and recovery reconciles them
    with the provider later, which finds each message instead of sending it again.
    """
    if not accepted:
        return
    sent_at = utcnow()
    rows = [(item.event_id, item.attempt, sent.provider_message_id) for item, sent in accepted]
    ids = [item.event_id for item, _ in accepted]
    delay = 0.2
    deadline = time.monotonic() + patience
    while True:
        try:
            with runtime.sessions.begin() as session:
                recorded = _mark_sent(session, rows, sent_at)
                # Delivery reports that came before this record (a fast provider, a slow batch).
                apply_parked(session, [sid for _, _, sid in rows if sid])
            break
        except DBAPIError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("events %s: sent, but recording them failed (%s); retrying", ids_text(ids), exc.orig)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    for item, sent in accepted:
        if recorded.get(item.event_id) != sent.provider_message_id:
            log.warning(
                "event %s: sent, but attempt %s no longer holds the row; the next claimant "
                "will find the message at the provider",
                item.event_id,
                item.attempt,
            )


def _mark_sent(
    session: Session, rows: list[tuple[int, int, str | None]], sent_at: datetime
) -> dict[int, str | None]:
    """Set (event, attempt, provider id) rows to sent; returns each event's provider id now stored."""
    table = EVENTS
    outcome = {
        "status": EventStatus.SENT,
        "sent_at": sent_at,
        "status_reason": None,
        "error_code": None,
        "needs_reconcile": False,
    }
    # Recovery may have put a row back to planned meanwhile; same attempt, so nobody else has
    # claimed it since and the outcome is still ours to record.
    done = update_each(
        session,
        {"event_id": Integer(), "attempt": Integer(), "provider_id": Text()},
        rows,
        where=lambda given: (
            table.c.id == given["event_id"],
            table.c.attempts == given["attempt"],
            or_(table.c.status == EventStatus.SENDING, table.c.status == EventStatus.PLANNED),
        ),
        values=lambda given: {"provider_message_id": given["provider_id"], **outcome},
        # RETURNING says which rows this attempt still held (PostgreSQL); SQLite looks after.
        returning=(table.c.id, table.c.provider_message_id),
    )
    if done is None:
        done = list(
            session.execute(
                select(CareEvent.id, CareEvent.provider_message_id).where(
                    CareEvent.id.in_([r[0] for r in rows])
                )
            )
        )
    return {event_id: provider_id for event_id, provider_id in done}


def announce_delivered(runtime: Runtime, event_ids: Sequence[int]) -> None:
    hook = runtime.registry.pm.hook.careflow_event_delivered
    if not event_ids or not hook.get_hookimpls():
        return
    with runtime.sessions() as session:
        events = session.scalars(
            select(CareEvent).where(CareEvent.id.in_(event_ids)).order_by(CareEvent.id)
        ).all()
        session.expunge_all()
    for event in events:
        try:  # outside any transaction: a reaction may write with its own session
            hook(event=event)
        except Exception:
            log.exception("a careflow_event_delivered hook failed for event %s", event.id)
