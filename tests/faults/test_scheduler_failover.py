"""Two `careflow scheduler` processes: one plans, kill -9 of the leader mid-plan, the standby takes over."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from careflow.storage.models import CareEvent, SchedulerRun
from careflow.testing.twilio_server import FakeTwilio
from tests.faults.harness import Deployment, RedisServer, seed_birthdays, wait_until

CUSTOMERS = 3_000
LEASE_SECONDS = 3.0
TICK_SECONDS = 0.5


def stamp(line: str) -> datetime:
    return datetime.fromisoformat(line.split(" ", 1)[0])


def test_a_standby_scheduler_takes_over_within_the_lease_and_they_never_plan_at_once(
    pg_url: str, own_redis: RedisServer, deploy: Callable[..., Deployment], fake_twilio: FakeTwilio
) -> None:
    site = deploy(
        db_url=pg_url,
        broker_url=own_redis.url,
        centers__main={"plan_at": "00:00"},  # due as soon as a leader looks
        scheduler={
            "tick_seconds": TICK_SECONDS,
            "lease_seconds": LEASE_SECONDS,
            "batch_size": 50,  # many batches: the leader renews its lease between them
            "requeue_after_seconds": 600,
        },
    )
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    with site.runtime() as runtime:
        seed_birthdays(runtime, CUSTOMERS, birthday=(today.month, today.day))

        def events() -> int:
            with runtime.sessions() as session:
                return int(session.scalar(select(func.count()).select_from(CareEvent)) or 0)

        site.scheduler("sched-a")
        wait_until(lambda: site.log_lines("sched-a", "leader: sched-a"), timeout=30, what="A to lead")
        site.scheduler("sched-b")
        wait_until(lambda: site.log_lines("sched-b", "started as sched-b"), timeout=30, what="B to start")
        wait_until(lambda: events() > 0, timeout=60, what="A to record its first batch", every=0.02)
        site.kill9("sched-a")
        killed_at = datetime.now(UTC)
        at_kill = events()
        assert at_kill < CUSTOMERS, "planning finished before the kill; make it slower"

        took_over = wait_until(
            lambda: site.log_lines("sched-b", "leader: sched-b"), timeout=LEASE_SECONDS + 10, what="B to lead"
        )
        wait_until(
            lambda: site.log_lines("sched-b", "plan end main"), timeout=60, what="B to finish planning"
        )
        delay = (stamp(took_over[0]) - killed_at).total_seconds()
        assert delay <= LEASE_SECONDS + 2 * TICK_SECONDS + 1.0, delay  # within the lease (plus a tick)

        # Never both planning: B started only after A was dead, and while A lived B only stood by.
        b_starts = [stamp(line) for line in site.log_lines("sched-b", "plan start")]
        assert len(b_starts) == 1 and b_starts[0] > killed_at
        assert len(site.log_lines("sched-a", "plan start")) == 1
        assert not site.log_lines("sched-a", "plan end")  # A died mid-plan
        # Every occasion recorded exactly once (B's pass re-found A's rows as already recorded).
        assert events() == CUSTOMERS
        with runtime.sessions() as session:
            keys = session.scalar(select(func.count(func.distinct(CareEvent.idempotency_key))))
            runs = session.execute(
                select(SchedulerRun.job, SchedulerRun.day, SchedulerRun.holder).where(
                    SchedulerRun.job.startswith("plan:")  # (segments:main is the day's segments)
                )
            ).all()
        assert keys == CUSTOMERS
        assert [tuple(r) for r in runs] == [("plan:main", today, "sched-b")]
        (b_end,) = site.log_lines("sched-b", "plan end main")
        assert f": {CUSTOMERS - at_kill} new, {at_kill} already recorded" in b_end

        # A restarted A is now the standby: it never plans the day again.
        site.scheduler("sched-a2")
        time.sleep(LEASE_SECONDS)
        assert not site.log_lines("sched-a2", "plan start")
        assert not site.log_lines("sched-a2", "leader: sched-a2")
        print(
            f"\nscheduler failover figures: A killed with {at_kill}/{CUSTOMERS} planned; "
            f"B led after {delay:.2f} s"
        )
