"""kill -9 of a worker mid-run, and a poison message that kills its worker every time."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from careflow.delivery.claims import DEAD_LETTER
from careflow.service.care_run import run_day
from careflow.storage.models import CareEvent
from careflow.testing.twilio_server import FakeTwilio, Fault
from tests.faults.harness import (
    NOW,
    Deployment,
    RedisServer,
    all_final,
    assert_sent_exactly_once,
    seed_birthdays,
    statuses,
    wait_until,
)

EVENTS = 2_000


def test_kill_9_of_a_worker_mid_run_sends_every_event_exactly_once(
    pg_url: str, own_redis: RedisServer, deploy: Callable[..., Deployment], fake_twilio: FakeTwilio
) -> None:
    site = deploy(
        db_url=pg_url,
        broker_url=own_redis.url,
        broker={"worker_threads": 8},
        scheduler={"requeue_after_seconds": 30},
    )
    fake_twilio.set_latency(0.01)
    with site.runtime() as runtime:
        phones = seed_birthdays(runtime, EVENTS)
        # Halfway through the run, one send is accepted by the provider but answered slowly:
        # the worker is killed in exactly the window where Twilio has the message and the
        # outbox still says "sending".
        victim = phones[EVENTS // 2]
        fake_twilio.fail_recipient(victim, Fault(status=201, hang_seconds=1.5))
        assert run_day(runtime, now=NOW).report.new == EVENTS  # planned and queued on Redis

        site.scheduler()
        site.worker("worker-1", threads=8)
        wait_until(lambda: fake_twilio.sent_to(victim), timeout=120, what="the run to reach the victim")
        site.kill9("worker-1")
        at_kill = statuses(runtime)
        accepted_at_kill = len(fake_twilio.messages)
        assert at_kill["sending"] >= 1  # the victim at least: accepted at the provider, not recorded
        assert 0 < accepted_at_kill < EVENTS

        site.worker("worker-2", threads=8)
        final = wait_until(lambda: all_final(runtime, EVENTS), timeout=180, what="every event final")
        time.sleep(1.0)  # a late duplicate would show up now
        assert final == {"sent": EVENTS}
        assert_sent_exactly_once(runtime, fake_twilio, phones)

        reconciled = site.log_lines("worker-2", "found at the provider")
        with runtime.sessions() as session:
            victim_event = session.scalars(select(CareEvent).where(CareEvent.recipient == victim)).one()
        assert victim_event.attempts == 2  # one killed attempt, one that found the message
        assert victim_event.provider_message_id == fake_twilio.sent_to(victim)[0].sid
        print(
            f"\nkill-9 figures: {EVENTS} events; at the kill the provider had accepted {accepted_at_kill}, "
            f"outbox {dict(at_kill)}; after restart {len(reconciled)} reconciled (found, not resent); "
            f"provider total {len(fake_twilio.messages)}, max per recipient 1, "
            f"create requests {fake_twilio.requests}"
        )


POISON_PLUGIN = '''
"""A plugin with a fatal bug for one customer: rendering that customer's message ends the process."""
import os
from careflow.hookspecs import hookimpl

@hookimpl
def careflow_template_context(event, customer):
    if customer.external_id == "F00003":
        os._exit(70)  # a hard crash: no exception handler, no cleanup, like a segfault
    return None
'''


def install_poison_plugin(directory: Path) -> str:
    """Installed the way a third-party package is: a module and an entry point on sys.path."""
    (directory / "poison_plugin.py").write_text(POISON_PLUGIN, encoding="utf-8")
    info = directory / "poison_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: poison-plugin\nVersion: 1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text("[careflow]\npoison = poison_plugin\n", encoding="utf-8")
    return str(directory)


def test_a_poison_message_is_bounded_recorded_and_dead_lettered(
    own_redis: RedisServer, deploy: Callable[..., Deployment], tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    plugin_dir = tmp_path / "site"
    plugin_dir.mkdir()
    max_attempts = 3
    site = deploy(
        db_url=f"sqlite:///{tmp_path / 'poison.db'}",
        broker_url=own_redis.url,
        delivery={"max_attempts": max_attempts, "time_limit_ms": 1000},
        scheduler={"requeue_after_seconds": 2},
    )
    site.env["PYTHONPATH"] = install_poison_plugin(plugin_dir)
    with site.runtime() as runtime:
        phones = seed_birthdays(runtime, 12)
        poison_phone = phones[3]
        assert run_day(runtime, now=NOW).report.new == 12
        site.scheduler()
        # A service manager restarts the worker whenever it dies (systemd Restart=always).
        deaths = 0
        site.worker("worker-0", threads=1)
        deadline = time.monotonic() + 120
        while not all_final(runtime, 12):
            assert time.monotonic() < deadline, f"not final: {statuses(runtime)}"
            current = site.processes[f"worker-{deaths}"]
            if current.poll() is not None:
                assert current.returncode == 70
                deaths += 1
                site.worker(f"worker-{deaths}", threads=1)
            time.sleep(0.1)
        time.sleep(1.0)
        with runtime.sessions() as session:
            poison = session.scalars(select(CareEvent).where(CareEvent.recipient == poison_phone)).one()
        assert poison.status == "failed" and poison.error_code == DEAD_LETTER
        assert deaths == max_attempts  # each attempt was counted before the crash, then no more
        assert poison.attempts == max_attempts + 1  # the claim that dead-lettered it
        assert f"{max_attempts} attempts ended without an outcome" in (poison.status_reason or "")
        assert fake_twilio.sent_to(poison_phone) == []
        others = [p for p in phones if p != poison_phone]
        assert sorted(m.to for m in fake_twilio.messages) == sorted(others)  # every other one, once
        assert statuses(runtime) == {"sent": 11, "failed": 1}
