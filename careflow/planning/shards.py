"""Sharded planning: a run splits customers into id ranges that workers on any host plan in parallel.

The run records itself (``plan_runs``) and its shards (``plan_shards``) before queueing one
``careflow_plan_shard`` message per shard, then waits until every shard row says ``done``.
A shard plans exactly the instant the run chose, so the outcome equals a single-process run.
Planning is idempotent (the outbox's unique key), so a shard whose worker died is simply
planned again when the broker redelivers its message; that second attempt also re-queues
the shard's events still ``planned``, in case the first died between commit and enqueue.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from careflow.planning.plan import PlanReport, PluginFailure, plan
from careflow.planning.prepare import prepare_run
from careflow.planning.windows import customer_id_span
from careflow.storage.models import CareEvent, EventStatus, PlanRun, PlanShard, utcnow

if TYPE_CHECKING:
    from careflow.runtime import Runtime

log = logging.getLogger(__name__)

PENDING, RUNNING, DONE = "pending", "running", "done"
FAILURES = "_failures"  # the key in a shard's counts that lists plugin failures


class ShardsUnfinished(Exception):
    """Raised when a run's shards did not all finish in time; planning stays safe to repeat."""


@dataclass(frozen=True)
class ShardPlan:
    run_id: int
    shard_ids: list[int]


def split(span: tuple[int, int], shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous inclusive id ranges covering ``span`` (fewer if the span is narrow)."""
    lo, hi = span
    width = max(1, -(-(hi - lo + 1) // shards))
    return [(start, min(start + width - 1, hi)) for start in range(lo, hi + 1, width)]


def shard_count(runtime: Runtime, span: tuple[int, int], requested: int | None) -> int:
    """How many shards a run gets: as requested, else one per ``[scheduler] shard_size`` ids."""
    if requested:
        return requested
    return max(1, -(-(span[1] - span[0] + 1) // runtime.settings.scheduler.shard_size))


def create_run(runtime: Runtime, *, now: datetime, day: date | None, shards: int | None) -> ShardPlan | None:
    """Record a run and its shards (committed before any message is queued); None if no customers.

    The once-per-run pre-planning (segments, weather look-ups) happens here, once, before any
    shard is planned; the shards' reports carry no pre-planning failures, so they are logged.
    """
    for who, problem in prepare_run(runtime, runtime.registry.enabled(runtime.settings), now=now, day=day):
        log.error("pre-planning for %s failed: %s", who, problem)
    with runtime.sessions.begin() as session:
        span = customer_id_span(session)
        if span is None:
            return None
        ranges = split(span, shard_count(runtime, span, shards))
        run = PlanRun(now=now, day=day, shards=len(ranges))
        session.add(run)
        session.flush()
        rows = [PlanShard(run_id=run.id, first_id=lo, last_id=hi, counts={}) for lo, hi in ranges]
        session.add_all(rows)
        session.flush()
        return ShardPlan(run.id, [r.id for r in rows])


def plan_shard(
    runtime: Runtime, shard_id: int, enqueue: Callable[[Sequence[int]], None]
) -> PlanReport | None:
    """Plan one shard (the body of the ``careflow_plan_shard`` actor); a finished shard is a no-op."""
    with runtime.sessions.begin() as session:
        shard = session.get(PlanShard, shard_id)
        if shard is None or shard.status == DONE:
            return None
        run = session.get(PlanRun, shard.run_id)
        assert run is not None
        again = shard.status == RUNNING  # an earlier attempt died or failed part-way
        shard.status, shard.attempts, shard.started_at = RUNNING, shard.attempts + 1, utcnow()
        span, now, day = (shard.first_id, shard.last_id), run.now, run.day
    try:
        report = plan(runtime, now=now, day=day, enqueue=enqueue, id_span=span)
        if again:
            enqueue(_still_planned(runtime, span))
    except Exception as exc:
        with runtime.sessions.begin() as session:
            session.execute(
                update(PlanShard).where(PlanShard.id == shard_id).values(error=f"{type(exc).__name__}: {exc}")
            )
        raise  # the broker retries the message with backoff
    counts: dict[str, Any] = {plugin: dict(c) for plugin, c in report.per_plugin.items()}
    if report.failures:
        counts[FAILURES] = [[f.plugin, *f.batch, f.error, f.customer] for f in report.failures]
    with runtime.sessions.begin() as session:
        session.execute(
            update(PlanShard)
            .where(PlanShard.id == shard_id)
            .values(status=DONE, counts=counts, finished_at=utcnow(), error=None)
        )
    return report


def _still_planned(runtime: Runtime, span: tuple[int, int]) -> list[int]:
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(CareEvent.id).where(
                    CareEvent.customer_id.between(*span), CareEvent.status == EventStatus.PLANNED
                )
            )
        )


def wait_for_run(
    runtime: Runtime,
    run_id: int,
    *,
    timeout: float,
    poll: float = 0.5,
    on_progress: Callable[[int, int], None] | None = None,
) -> PlanReport:
    """Block until every shard of the run is done; their counts combined into one report.

    ``on_progress(done, total)`` counts customer ids, like unsharded planning does.
    """
    deadline = time.monotonic() + timeout
    width = PlanShard.last_id - PlanShard.first_id + 1
    while True:
        with runtime.sessions() as session:
            rows = session.execute(
                select(PlanShard.status, func.count(), func.sum(width))
                .where(PlanShard.run_id == run_id)
                .group_by(PlanShard.status)
            ).all()
        done = sum(int(n) for status, n, _ in rows if status == DONE)
        total = sum(int(n) for _, n, _ in rows)
        if on_progress is not None:
            done_ids = sum(int(ids or 0) for status, _, ids in rows if status == DONE)
            on_progress(done_ids, sum(int(ids or 0) for _, _, ids in rows))
        if done == total:
            return run_report(runtime, run_id)
        if time.monotonic() > deadline:
            raise ShardsUnfinished(_unfinished_message(runtime, run_id, done, total))
        time.sleep(poll)


def _unfinished_message(runtime: Runtime, run_id: int, done: int, total: int) -> str:
    with runtime.sessions() as session:
        open_shards = session.scalars(
            select(PlanShard).where(PlanShard.run_id == run_id, PlanShard.status != DONE).limit(5)
        ).all()
    lines = [
        f"plan run {run_id}: {done} of {total} shards done before the timeout; "
        "is a 'careflow worker' running on this broker and queue? Running 'careflow run' again is safe."
    ]
    for shard in open_shards:
        why = f": {shard.error}" if shard.error else ""
        lines.append(
            f"  shard {shard.id} (customers {shard.first_id}-{shard.last_id}) "
            f"{shard.status}, {shard.attempts} attempt(s){why}"
        )
    return "\n".join(lines)


def run_report(runtime: Runtime, run_id: int) -> PlanReport:
    """Per-plugin outcomes of all shards of a run (what one unsharded ``plan`` would have reported)."""
    report = PlanReport()
    with runtime.sessions() as session:
        for counts in session.scalars(select(PlanShard.counts).where(PlanShard.run_id == run_id)):
            report.batches += 1
            for plugin, outcomes in counts.items():
                if plugin == FAILURES:
                    report.failures.extend(
                        PluginFailure(name, (lo, hi), error, customer)
                        for name, lo, hi, error, customer in outcomes
                    )
                    continue
                report.per_plugin.setdefault(plugin, Counter()).update(outcomes)
    for outcomes in report.per_plugin.values():
        report.new += sum(outcomes[k] for k in ("planned", "deferred", "expired", "suppressed"))
        report.suppressed += outcomes["suppressed"]
        report.already_recorded += outcomes["already recorded"]
    report.occasions = report.new + report.already_recorded
    return report
