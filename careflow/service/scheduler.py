"""``careflow scheduler``: the always-on service that plans each center's day and keeps delivery moving.

Several scheduler processes may run (one per host, say); a lease row in the database picks
the one that works, and a standby takes over once the leader's lease expires. The work is a
list of periodic jobs (``default_jobs``): plan centers whose local planning time has come,
plan again during the day the plugins that ask for it (weather warnings), release deferred
events whose quiet hours are over, recover stuck sends and re-queue lost messages.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from careflow.customers.segments import refresh_segments
from careflow.delivery.provider_status import apply_parked
from careflow.delivery.recovery import lost_planned_ids, recover_stuck_sends
from careflow.planning.center_settings import plugin_passes
from careflow.planning.plan import plan
from careflow.policies.quiet_hours import release_deferred
from careflow.runtime import Runtime
from careflow.storage import leases
from careflow.storage.job_runs import is_done, record_done
from careflow.storage.models import Center, utcnow

log = logging.getLogger(__name__)

LEASE_NAME = "scheduler"

Enqueue = Callable[[Sequence[int]], None]
Report = Callable[[str], None]


def _log_report(message: str) -> None:
    log.info("%s", message)


class LeaseLost(Exception):
    """Another scheduler holds the lease now: stop working at once."""


@dataclass
class JobContext:
    """What a periodic job may use; ``keep_lease`` renews the lease or raises ``LeaseLost``."""

    runtime: Runtime
    now: datetime
    enqueue: Enqueue
    holder: str
    keep_lease: Callable[[], None]
    report: Report


@dataclass(frozen=True)
class PeriodicJob:
    """One thing the leader does on every tick (jobs decide themselves whether work is due)."""

    name: str
    run: Callable[[JobContext], None]


def plan_due_centers(ctx: JobContext) -> None:
    """Plan each center whose local ``plan_at`` has passed today and whose day is not planned yet."""
    runtime = ctx.runtime
    with runtime.sessions() as session:
        centers = {c.code: c.id for c in session.scalars(select(Center))}
    for code, cfg in runtime.settings.centers.items():
        local = ctx.now.astimezone(ZoneInfo(cfg.timezone))
        hours, minutes = (int(part) for part in cfg.plan_at.split(":"))
        if local.time() < time(hours, minutes) or code not in centers:
            continue
        job = f"plan:{code}"
        with runtime.sessions() as session:
            if is_done(session, job, local.date()):
                continue
        ctx.keep_lease()
        ctx.report(f"plan start {code} {local.date()}")
        report = plan(
            runtime,
            now=ctx.now,
            enqueue=ctx.enqueue,
            # A planning pass may outlast the lease: renew it between batches, stop if it is lost.
            on_batch=lambda _done, _total: ctx.keep_lease(),
            center_ids=[centers[code]],
        )
        with runtime.sessions.begin() as session:
            record_done(session, job, local.date(), ctx.holder)
        ctx.report(
            f"plan end {code} {local.date()}: {report.new} new, {report.already_recorded} already recorded"
        )


@dataclass
class IntradayPlanning:
    """Plan again, alone, each plugin with a ``replan_interval`` for the centers whose day is planned.

    A weather warning issued at 14:00 must reach the city's customers that day, while the
    other plugins' day is planned once (re-planning them would find nothing new, at a cost).
    The last pass is remembered in this process, so the first one comes at once (right after
    the daily plan, or when a new leader takes over): it costs no provider call (look-ups are
    throttled in the database) and records nothing twice.
    """

    last: dict[tuple[str, str], datetime] = field(default_factory=dict)  # (plugin, center) -> pass

    def __call__(self, ctx: JobContext) -> None:
        runtime = ctx.runtime
        with runtime.sessions() as session:
            runs = [
                r
                for r in plugin_passes(runtime.registry, runtime.settings, session)
                if r.plugin.replan_interval(r.settings)
            ]
            if not runs:
                return
            ids = {c.code: c.id for c in session.scalars(select(Center))}
            planned = [
                code
                for code, cfg in runtime.settings.centers.items()
                if code in ids
                and is_done(session, f"plan:{code}", ctx.now.astimezone(ZoneInfo(cfg.timezone)).date())
            ]
        due: dict[str, set[str]] = {}
        for run in runs:
            every = run.plugin.replan_interval(run.settings)
            assert every is not None
            for code in planned:
                if run.center_ids is not None and ids[code] not in run.center_ids:
                    continue
                last = self.last.get((run.plugin.name, code))
                if last is None or ctx.now - last >= every:
                    due.setdefault(run.plugin.name, set()).add(code)
        for name, codes in sorted(due.items()):
            ctx.keep_lease()
            report = plan(
                runtime,
                now=ctx.now,
                enqueue=ctx.enqueue,
                on_batch=lambda _done, _total: ctx.keep_lease(),
                center_ids=[ids[code] for code in codes],
                plugins=[name],
            )
            self.last.update({(name, code): ctx.now for code in codes})
            if report.new or report.failures:
                problems = "".join(f"; {f.error}" for f in report.failures)
                ctx.report(f"replan {name} {', '.join(sorted(codes))}: {report.new} new{problems}")


def refresh_due_segments(ctx: JobContext) -> None:
    """Compute each center's segments once its local ``[segments] refresh_at`` has passed today.

    Ahead of ``plan_at``, so planning finds them fresh instead of computing them itself.
    """
    runtime = ctx.runtime
    hours, minutes = (int(part) for part in runtime.settings.segments.refresh_at.split(":"))
    for code, cfg in runtime.settings.centers.items():
        local = ctx.now.astimezone(ZoneInfo(cfg.timezone))
        if local.time() < time(hours, minutes):
            continue
        ctx.keep_lease()
        with runtime.sessions.begin() as session:
            written = refresh_segments(
                session,
                runtime.settings.segments,
                now=ctx.now,
                only_stale=True,
                center_codes=[code],
                holder=ctx.holder,
            )
        if written:
            ctx.report(f"segments {code} {local.date()}: {written} customer(s) classified")


def recover_and_requeue(ctx: JobContext) -> None:
    """Reconcile sends a dead worker left in ``sending``; re-queue planned events whose message was lost."""
    runtime = ctx.runtime
    recovered = recover_stuck_sends(runtime)
    if recovered:
        ctx.enqueue(recovered)
    older_than = timedelta(seconds=runtime.settings.scheduler.requeue_after_seconds)
    queued = set(recovered)
    lost = [i for i in lost_planned_ids(runtime, older_than=older_than) if i not in queued]
    if lost:
        ctx.enqueue(lost)
    if recovered or lost:
        ctx.report(
            f"recovery: {len(recovered)} stuck send(s) queued for reconciliation, "
            f"{len(lost)} planned event(s) re-queued"
        )


def release_deferred_job(ctx: JobContext) -> None:
    """Quiet hours: deferred events whose sending window has opened go back on the queue."""
    released = release_deferred(ctx.runtime, ctx.now, enqueue=ctx.enqueue)
    if released:
        ctx.report(f"released {len(released)} deferred event(s)")


def apply_parked_reports(ctx: JobContext) -> None:
    """Delivery reports that came before their send was recorded: apply those now recorded."""
    with ctx.runtime.sessions.begin() as session:
        applied = apply_parked(session, now=ctx.now)
    if applied:
        ctx.report(f"applied {applied} delivery report(s) that arrived before their send was recorded")


def default_jobs() -> list[PeriodicJob]:
    """The leader's periodic jobs, in order. The seam where other modules add theirs."""
    return [
        PeriodicJob("segments", refresh_due_segments),
        PeriodicJob("plan", plan_due_centers),
        PeriodicJob("replan", IntradayPlanning()),
        PeriodicJob("release-deferred", release_deferred_job),
        PeriodicJob("recover", recover_and_requeue),
        PeriodicJob("provider-reports", apply_parked_reports),
    ]


@dataclass
class SchedulerService:
    """Runs the periodic jobs while it holds the lease; a standby otherwise."""

    runtime: Runtime
    holder: str
    enqueue: Enqueue
    jobs: list[PeriodicJob] = field(default_factory=default_jobs)
    report: Report = field(default_factory=lambda: _log_report)
    leader: bool | None = None  # None until the first tick has asked for the lease

    @property
    def ttl(self) -> timedelta:
        return timedelta(seconds=self.runtime.settings.scheduler.lease_seconds)

    def _keep_lease(self) -> None:
        if not leases.acquire(self.runtime.sessions, LEASE_NAME, self.holder, ttl=self.ttl, now=utcnow()):
            self._set_leader(False)
            raise LeaseLost(f"{self.holder} lost the scheduler lease")

    def _set_leader(self, leader: bool) -> None:
        if leader != self.leader:
            if leader:
                self.report(f"leader: {self.holder}")
            else:
                current = leases.holder_of(self.runtime.sessions, LEASE_NAME, now=utcnow())
                self.report(f"standby: {self.holder} (lease held by {current or 'nobody'})")
        self.leader = leader

    def tick(self, now: datetime | None = None) -> bool:
        """One round: take or renew the lease, then run every job; True if this process led."""
        moment = now or utcnow()
        try:
            self._keep_lease()
        except LeaseLost:
            return False
        self._set_leader(True)
        ctx = JobContext(self.runtime, moment, self.enqueue, self.holder, self._keep_lease, self.report)
        for job in self.jobs:
            try:
                job.run(ctx)
            except LeaseLost:
                self.report(f"lease lost during {job.name}; standing by")
                return False
            except Exception as exc:  # one failing job must not stop the others or the service
                log.exception("scheduler job %s failed", job.name)
                self.report(f"job {job.name} failed: {type(exc).__name__}: {exc}")
        return True

    def serve(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set, then hand the lease over at once."""
        interval = self.runtime.settings.scheduler.tick_seconds
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except Exception as exc:  # e.g. the database is away: try again next tick
                    log.exception("scheduler tick failed")
                    self.report(f"tick failed: {type(exc).__name__}: {exc}")
                stop.wait(interval)
        finally:
            if self.leader:
                try:
                    leases.release(self.runtime.sessions, LEASE_NAME, self.holder, now=utcnow())
                except Exception:
                    log.exception("could not release the scheduler lease; it expires by itself")
