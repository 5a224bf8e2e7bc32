"""One care run: recover what an earlier run left, plan the day, and deliver (or queue) it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import cast
from zoneinfo import ZoneInfo

from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import case, select, update
from sqlalchemy.orm import joinedload

from careflow.config import CenterSettings, Settings
from careflow.delivery.actors import Actors, build_actors
from careflow.delivery.broker import LOCAL, make_broker
from careflow.delivery.enqueue import enqueue_many
from careflow.delivery.recovery import stale_event_ids
from careflow.planning.plan import PlanReport, plan
from careflow.planning.shards import create_run, shard_count, wait_for_run
from careflow.planning.windows import customer_id_span
from careflow.policies.frequency_cap import Cap, cap_decisions
from careflow.policies.quiet_hours import release_deferred
from careflow.policies.rows import PlannedRow
from careflow.policies.timing import customer_zone, send_timing
from careflow.runtime import Runtime
from careflow.storage.models import CareEvent, EventStatus

log = logging.getLogger(__name__)

# A planned event untouched this long on a remote broker has probably lost its message.
REMOTE_REQUEUE_AFTER = timedelta(minutes=15)


@dataclass
class RunResult:
    report: PlanReport
    requeued: int  # planned-but-unsent events from earlier runs put back on the queue
    delivered_locally: bool
    released: int = 0  # deferred events whose sending window had opened
    shards: int = 0  # planned by workers in this many shards (0: planned in this process)
    # Events of earlier runs that this run handed to delivery (re-queued or released).
    carried: list[int] = field(default_factory=list)


def planning_instant(settings: Settings, now: datetime, day: date | None) -> datetime:
    """The instant a run plans at: ``now``; for an explicit ``day``, that day at ``now``'s local time.

    A backfill (``careflow run --date D``) plans as if it ran on D at the hour it runs, in the
    first center's time zone: expiry, quiet hours and the "deferred until" they record are D's,
    in a dry run and in the real run alike, while the time of day, which quiet hours judge, is
    the real one. A deferral of a past day whose window has passed goes out when the window is
    next open (``careflow.policies.quiet_hours.release_deferred``).
    """
    if day is None:
        return now
    tz = ZoneInfo(settings.centers[settings.default_center].timezone)
    local = now.astimezone(tz)
    if local.date() == day:
        return now
    return datetime.combine(day, local.time(), tzinfo=tz)


def run_day(
    runtime: Runtime,
    *,
    now: datetime,
    day: date | None = None,
    dry_run: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
    shards: int | None = None,
    shard_timeout: float = 3600.0,
    on_preview: Callable[[list[PlannedRow]], None] | None = None,
) -> RunResult:
    """Plan (and with the ``local`` broker, deliver) one day of care.

    ``now`` is the clock (recovery and release use it); ``day`` is planned at
    ``planning_instant``. On a remote broker, planning is split into shards planned by the
    workers when the customers span more than ``[scheduler] shard_size`` ids, or when
    ``shards`` is given. A dry run hands its rows to ``on_preview`` batch by batch when given.
    """
    at = planning_instant(runtime.settings, now, day)
    if dry_run:
        report = plan(
            runtime, now=at, day=day, dry_run=True, on_batch=on_batch, clock=now, on_preview=on_preview
        )
        return RunResult(report, 0, False)
    url = runtime.settings.broker.url
    broker = make_broker(url, runtime.settings.broker)
    actors = build_actors(broker, runtime)
    stuck_after = timedelta(milliseconds=runtime.settings.delivery.time_limit_ms) * 2
    if url != LOCAL:
        stale = _stale_remote(runtime, now, stuck_after)
        actors.enqueue_deliveries(stale)
        released = release_deferred(runtime, now, enqueue=actors.enqueue_deliveries)
        try:
            sharded = _plan_in_shards(runtime, actors, at, day, shards, shard_timeout, on_batch)
            if sharded is not None:
                return RunResult(sharded[0], len(stale), False, len(released), shards=sharded[1])
            report = plan(
                runtime, now=at, day=day, clock=now, enqueue=actors.enqueue_deliveries, on_batch=on_batch
            )
        finally:
            broker.close()
        return RunResult(report, len(stale), False, len(released))
    worker = Worker(broker, worker_threads=runtime.settings.broker.worker_threads, worker_timeout=100)
    worker.start()
    try:
        # Delivered here, so under the run's own clock: sends see quiet hours and expiry at the
        # instant this run stands for (``careflow run --now``), not at the wall clock.
        with runtime.pretending(now):
            # The in-process queue died with the last process: the outbox says what is unsent.
            stale = stale_event_ids(runtime, now=now, stuck_after=stuck_after)
            actors.enqueue_deliveries(stale)
            released = release_deferred(runtime, now, enqueue=actors.enqueue_deliveries)
            report = plan(
                runtime, now=at, day=day, clock=now, enqueue=actors.enqueue_deliveries, on_batch=on_batch
            )
            cast(StubBroker, broker).join(actors.queue, fail_fast=False)
    finally:
        worker.stop()
        broker.close()
    return RunResult(report, len(stale), True, len(released), carried=[*stale, *released])


def _plan_in_shards(
    runtime: Runtime,
    actors: Actors,
    now: datetime,
    day: date | None,
    shards: int | None,
    timeout: float,
    on_progress: Callable[[int, int], None] | None,
) -> tuple[PlanReport, int] | None:
    """Queue one planning message per shard and wait for all; None when one shard would do."""
    with runtime.sessions() as session:
        span = customer_id_span(session)
    if span is None or (not shards and shard_count(runtime, span, None) < 2):
        return None
    created = create_run(runtime, now=now, day=day, shards=shards)
    if created is None:
        return None
    enqueue_many(actors.broker, actors.plan_shard, [(shard_id,) for shard_id in created.shard_ids])
    report = wait_for_run(runtime, created.run_id, timeout=timeout, on_progress=on_progress)
    return report, len(created.shard_ids)


def _stale_remote(runtime: Runtime, now: datetime, stuck_after: timedelta) -> list[int]:
    ids = stale_event_ids(runtime, now=now, stuck_after=stuck_after)
    if not ids:
        return []
    with runtime.sessions() as session:
        old = session.scalars(
            select(CareEvent.id).where(
                CareEvent.id.in_(ids),
                CareEvent.updated_at < now - REMOTE_REQUEUE_AFTER,
            )
        )
        return list(old)


@dataclass
class RetryResult:
    """What a retry did with each failed event: queued again, deferred, suppressed or expired."""

    planned: list[int] = field(default_factory=list)  # to queue now
    deferred: dict[int, datetime] = field(default_factory=dict)  # id -> when its window opens
    suppressed: list[int] = field(default_factory=list)  # over the frequency cap
    expired: list[int] = field(default_factory=list)

    @property
    def reset(self) -> int:
        return len(self.planned) + len(self.deferred) + len(self.suppressed) + len(self.expired)

    def summary(self) -> str:
        parts = [f"{len(self.planned)} queued"] if self.planned else []
        if self.deferred:
            first = min(self.deferred.values()).isoformat()
            parts.append(f"{len(self.deferred)} deferred to the sending window (the first until {first})")
        if self.suppressed:
            parts.append(f"{len(self.suppressed)} suppressed by the frequency cap")
        if self.expired:
            parts.append(f"{len(self.expired)} expired")
        return ", ".join(parts) or "nothing to retry"


@dataclass(frozen=True, slots=True)
class _Retried:
    """A failed event as the frequency cap sees it when retried: planned again, due today."""

    idempotency_key: str
    customer_id: int
    center_id: int
    plugin: str
    priority: int
    due_date: date
    status: EventStatus = EventStatus.PLANNED


def retry_events(runtime: Runtime, event_ids: Sequence[int], *, now: datetime | None = None) -> RetryResult:
    """Put failed events back (after a fix) through the same timing policies as planning.

    Each is reset with fresh attempts and then, at ``now``: ``expired`` if its occasion has
    passed, ``suppressed`` if the customer is at the frequency cap (counted in the window
    ending today), ``deferred`` to the window opening in quiet hours, else ``planned``, with
    the reason recorded. The stored body is dropped so a fixed template applies, except where
    the last attempt may have reached the provider: that body is what reconciliation looks for.
    Only ``planned`` ones are for the caller to queue (``RetryResult.planned``).
    """
    now = now or runtime.now()
    centers = runtime.settings.centers
    result = RetryResult()
    with runtime.sessions.begin() as session:
        events = session.scalars(
            select(CareEvent)
            .where(CareEvent.id.in_(list(event_ids)), CareEvent.status == EventStatus.FAILED)
            .options(joinedload(CareEvent.customer))
            .order_by(CareEvent.id)
        ).all()
        # The cap counts the window ending on the day each would now be sent.
        retried = [
            _Retried(
                idempotency_key=event.idempotency_key,
                customer_id=event.customer_id,
                center_id=event.center_id,
                plugin=event.plugin,
                priority=event.priority,
                due_date=now.astimezone(customer_zone(event.customer)).date(),
            )
            for event in events
        ]

        codes = {event.center_id: event.customer.center.code for event in events}

        def center_of(center_id: int) -> CenterSettings | None:
            return centers.get(codes[center_id])

        capped = cap_decisions(
            session, retried, cap_for=lambda cid: Cap.of(center_of(cid)), existing_keys=set()
        )
        for event in events:
            decision = capped.get(event.idempotency_key) or send_timing(
                now, customer_zone(event.customer), center_of(event.center_id), event.expires_at
            )
            status = decision.status
            reason = "retried by an operator" + (f"; {decision.reason}" if decision.reason else "")
            done = session.execute(
                update(CareEvent)
                .where(CareEvent.id == event.id, CareEvent.status == EventStatus.FAILED)
                .values(
                    status=status,
                    not_before=decision.not_before,
                    attempts=0,
                    status_reason=reason,
                    error_code=None,
                    body=case((CareEvent.needs_reconcile, CareEvent.body), else_=None),
                )
                .execution_options(synchronize_session=False)
            )
            if getattr(done, "rowcount", 0) != 1:
                continue  # retried meanwhile by someone else
            if status is EventStatus.PLANNED:
                result.planned.append(event.id)
            elif status is EventStatus.DEFERRED:
                assert decision.not_before is not None  # a deferral names the window's opening
                result.deferred[event.id] = decision.not_before
            elif status is EventStatus.SUPPRESSED:
                result.suppressed.append(event.id)
            else:
                result.expired.append(event.id)
    return result


def queue_events(runtime: Runtime, event_ids: Sequence[int]) -> bool:
    """Hand events to the broker; with ``local`` deliver them here and now. True if delivered."""
    broker = make_broker(runtime.settings.broker.url, runtime.settings.broker)
    actors = build_actors(broker, runtime)
    if runtime.settings.broker.url != LOCAL:
        actors.enqueue_deliveries(event_ids)
        broker.close()
        return False
    worker = Worker(broker, worker_threads=runtime.settings.broker.worker_threads, worker_timeout=100)
    worker.start()
    try:
        actors.enqueue_deliveries(event_ids)
        cast(StubBroker, broker).join(actors.queue, fail_fast=False)
    finally:
        worker.stop()
        broker.close()
    return True
