"""The database is locked (SQLite) or drops every connection (PostgreSQL) for seconds mid-run."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from careflow.service.care_run import run_day
from careflow.testing.twilio_server import FakeTwilio
from tests.conftest import PG_ADMIN_URL
from tests.faults.harness import (
    NOW,
    Deployment,
    RedisServer,
    all_final,
    assert_sent_exactly_once,
    seed_birthdays,
    wait_until,
)

EVENTS = 300
BATCH = 5  # [delivery] batch_size of the locked-database run
OUTAGE_SECONDS = 4.0


def test_an_exclusively_locked_sqlite_database_delays_the_run_but_loses_nothing(
    own_redis: RedisServer, deploy: Callable[..., Deployment], tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    db_file = tmp_path / "locked.db"
    # Small batches, so that most of the day is still unclaimed when the lock comes.
    site = deploy(db_url=f"sqlite:///{db_file}", broker_url=own_redis.url, delivery={"batch_size": BATCH})
    fake_twilio.set_latency(0.01)
    with site.runtime() as runtime:
        phones = seed_birthdays(runtime, EVENTS)
        assert run_day(runtime, now=NOW).report.new == EVENTS
        site.scheduler()
        site.worker()
        wait_until(lambda: len(fake_twilio.messages) >= EVENTS // 4, timeout=60, what="a quarter sent")
        blocker = sqlite3.connect(db_file, isolation_level=None, timeout=30)
        blocker.execute("BEGIN EXCLUSIVE")  # no other connection may write (WAL readers still read)
        locked_at = len(fake_twilio.messages)
        time.sleep(OUTAGE_SECONDS)
        during = len(fake_twilio.messages)
        blocker.execute("COMMIT")
        blocker.close()
        final = wait_until(lambda: all_final(runtime, EVENTS), timeout=120, what="every event final")
        time.sleep(1.0)
        assert final == {"sent": EVENTS}
        assert_sent_exactly_once(runtime, fake_twilio, phones)
        # While locked, at most the sends already past their claim could reach the provider:
        # the batches the four worker threads held when the lock came.
        assert during - locked_at <= 4 * BATCH
        print(f"\nsqlite lock figures: {locked_at} sent before the lock, {during - locked_at} during it")


def test_postgresql_connections_terminated_for_seconds_the_run_resumes_without_loss(
    pg_url: str, own_redis: RedisServer, deploy: Callable[..., Deployment], fake_twilio: FakeTwilio
) -> None:
    site = deploy(db_url=pg_url, broker_url=own_redis.url, scheduler={"requeue_after_seconds": 4})
    fake_twilio.set_latency(0.01)
    database = make_url(pg_url).database
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with site.runtime() as runtime:
            phones = seed_birthdays(runtime, EVENTS)
            assert run_day(runtime, now=NOW).report.new == EVENTS
            runtime.engine.dispose()  # the test's own pool reconnects after the outage
            site.scheduler()
            site.worker()
            wait_until(lambda: len(fake_twilio.messages) >= EVENTS // 4, timeout=60, what="a quarter sent")
            killed = 0
            deadline = time.monotonic() + OUTAGE_SECONDS
            with admin.connect() as conn:
                while time.monotonic() < deadline:  # every connection to this database, again and again
                    killed += len(
                        conn.execute(
                            text(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = :db AND pid <> pg_backend_pid()"
                            ),
                            {"db": database},
                        ).all()
                    )
                    time.sleep(0.05)
            final = wait_until(lambda: all_final(runtime, EVENTS), timeout=120, what="every event final")
            time.sleep(1.0)
            assert final == {"sent": EVENTS}
            assert_sent_exactly_once(runtime, fake_twilio, phones)
            assert killed > 0
            assert site.processes["worker"].poll() is None
            print(f"\npostgresql outage figures: {killed} connections terminated over {OUTAGE_SECONDS} s")
    finally:
        admin.dispose()
