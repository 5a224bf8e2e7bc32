"""Recovery of deliveries a crash or a lost broker message left behind; the scheduler runs it."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from careflow.config import Settings
from careflow.storage.models import CareEvent, EventStatus, utcnow

if TYPE_CHECKING:
    from careflow.runtime import Runtime

log = logging.getLogger(__name__)

RECOVERED = "recovered from a worker that stopped mid-send"


def stuck_after(settings: Settings) -> timedelta:
    """A send older than this cannot still be running: Dramatiq's time limit interrupts it first."""
    return timedelta(milliseconds=settings.delivery.time_limit_ms) * 2


def recover_stuck_sends(runtime: Runtime, *, older_than: timedelta | None = None) -> list[int]:
    """Put events stuck in ``sending`` back to ``planned``, flagged to ask the provider first.

    Their worker died (kill -9, OOM, host loss) somewhere between claiming and recording; the
    provider may or may not have the message, so the next attempt looks it up by recipient,
    time window and body and only sends if the provider has no record of it. Uses the real
    clock: ``claimed_at`` is always written from it. Returns the recovered ids, to queue now.
    """
    limit = utcnow() - (older_than if older_than is not None else stuck_after(runtime.settings))
    stuck = (CareEvent.status == EventStatus.SENDING, CareEvent.claimed_at < limit)
    with runtime.sessions.begin() as session:
        ids = list(session.scalars(select(CareEvent.id).where(*stuck).order_by(CareEvent.id)))
        for start in range(0, len(ids), 1_000):
            session.execute(
                update(CareEvent)
                .where(CareEvent.id.in_(ids[start : start + 1_000]), *stuck)
                .values(status=EventStatus.PLANNED, needs_reconcile=True, status_reason=RECOVERED)
                .execution_options(synchronize_session=False)
            )
    if ids:
        log.warning(
            "recovered %d event(s) stuck in 'sending'; each is reconciled before any resend", len(ids)
        )
    return ids


def lost_planned_ids(runtime: Runtime, *, older_than: timedelta, now: datetime | None = None) -> list[int]:
    """Planned events untouched for ``older_than``: their broker message was probably lost.

    They are touched (``updated_at``) as they are handed out, so a backlog the workers are
    still draining is queued again at most once per ``older_than``; a duplicate message is
    harmless because the claim lets only one delivery through.
    """
    moment = now or utcnow()
    with runtime.sessions.begin() as session:
        ids = list(
            session.scalars(
                select(CareEvent.id)
                .where(CareEvent.status == EventStatus.PLANNED, CareEvent.updated_at < moment - older_than)
                .order_by(CareEvent.id)
            )
        )
        for start in range(0, len(ids), 1_000):
            session.execute(
                update(CareEvent)
                .where(CareEvent.id.in_(ids[start : start + 1_000]), CareEvent.status == EventStatus.PLANNED)
                .values(updated_at=moment)
                .execution_options(synchronize_session=False)
            )
    return ids


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
