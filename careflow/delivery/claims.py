"""Claims: planned -> sending by compare-and-set, the attempt counted first; dead letters; hand-backs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, select, update
from sqlalchemy.orm import Session

from careflow.delivery.results import BatchResult, Outcome
from careflow.delivery.rows import set_status, still_held, update_each
from careflow.storage.models import CareEvent, EventStatus

if TYPE_CHECKING:
    from careflow.runtime import Runtime

log = logging.getLogger(__name__)

DEAD_LETTER = "dead-letter"  # error_code of an event whose attempts all died without an outcome


def claim_attempt(runtime: Runtime, event_id: int, now: datetime) -> Outcome | int:
    """Claim one event: its attempt number, or the outcome when there is nothing to send."""
    result = BatchResult()
    claimed = claim_many(runtime, [event_id], now, result, fresh_only=False)
    return claimed.get(event_id) or result.outcomes.get(event_id, Outcome.SKIPPED)


def claim_many(
    runtime: Runtime, event_ids: list[int], now: datetime, result: BatchResult, *, fresh_only: bool
) -> dict[int, int]:
    """Claim the events and count the attempts in a committed transaction of its own.

    The count is durable *before* anything that could kill the process (rendering, plugin
    hooks, the provider call), so a message that crashes its worker every time is bounded:
    once the attempts are used up it is dead-lettered here instead of being tried again.
    Returns the attempt number of each event this call now holds.
    """
    max_attempts = runtime.settings.delivery.max_attempts
    claimed: dict[int, int] = {}
    with runtime.sessions.begin() as session:
        rows = claim_rows(session, event_ids, now, fresh_only=fresh_only)
        for row in rows:
            attempt = int(row.attempts)
            if attempt <= max_attempts:
                claimed[row.id] = attempt
                continue
            # Every earlier attempt ended without an outcome: the worker died or was killed.
            reason = (
                f"dead-lettered: {attempt - 1} attempts ended without an outcome "
                f"(the worker stopped or crashed each time); last note: {row.status_reason or '-'}"
            )
            if row.needs_reconcile:
                reason += "; the last attempt may have reached the provider, check before retrying"
            set_status(
                session, row.id, attempt, EventStatus.FAILED, status_reason=reason, error_code=DEAD_LETTER
            )
            log.error("event %s: %s", row.id, reason)
            result.outcomes[row.id] = Outcome.FAILED
        missed = [i for i in event_ids if i not in claimed and i not in result.outcomes]
        if missed:
            # A redelivered or duplicate message: whoever holds or finished the event decides;
            # an event tried before (still planned) goes on alone, in a message of its own.
            statuses = session.execute(select(CareEvent.id, CareEvent.status).where(CareEvent.id.in_(missed)))
            for event_id, status in statuses:
                if fresh_only and status == EventStatus.PLANNED:
                    result.isolated.append(event_id)
                    continue
                log.info("event %s: skipped (status %s)", event_id, status)
                result.outcomes[event_id] = Outcome.SKIPPED
    return claimed


def claim_rows(
    session: Session, event_ids: Sequence[int], now: datetime, *, fresh_only: bool = False
) -> list[Any]:
    """Compare-and-set planned -> sending; exactly one caller wins each event, however many race.

    Returns the won rows (id, attempts, needs_reconcile, status_reason). With ``fresh_only``
    only events never tried before are claimed.
    """
    query = (
        update(CareEvent)
        .where(CareEvent.id.in_(event_ids), CareEvent.status == EventStatus.PLANNED)
        .values(status=EventStatus.SENDING, attempts=CareEvent.attempts + 1, claimed_at=now)
        .returning(CareEvent.id, CareEvent.attempts, CareEvent.needs_reconcile, CareEvent.status_reason)
        .execution_options(synchronize_session=False)
    )
    if fresh_only:
        query = query.where(CareEvent.attempts == 0)
    return list(session.execute(query).all())


def release(runtime: Runtime, held: Sequence[tuple[int, int]]) -> None:
    """Hand claimed events that were never tried back to ``planned``, their attempt uncounted."""
    if not held:
        return
    with runtime.sessions.begin() as session:
        update_each(
            session,
            {"event_id": Integer(), "attempt": Integer()},
            held,
            where=still_held,
            values=lambda given: {
                "status": EventStatus.PLANNED,
                "attempts": given["attempt"] - 1,
                "claimed_at": None,
            },
        )
