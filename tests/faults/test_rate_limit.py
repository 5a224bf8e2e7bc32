"""Sender rate limit across two real worker processes, judged by the fake Twilio server's clock."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from careflow.config import load_settings
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.testing import add_customer, build_runtime, parse_instant
from careflow.testing.twilio_server import FakeTwilio, Fault
from tests.conftest import AMQP_URL, REDIS_URL
from tests.policy_support import events, twilio_runtime

NOW = parse_instant("2026-05-11T10:00:00+08:00")
RATE = 4.0
MESSAGES = 16


def write_config(tmp_path: Path, fake: FakeTwilio, broker_url: str, queue: str) -> Path:
    path = tmp_path / "careflow.toml"
    path.write_text(
        f"""
[database]
url = "sqlite:///{tmp_path / "c.db"}"
[broker]
url = "{broker_url}"
queue = "{queue}"
worker_threads = 4
[channels.sms]
provider = "twilio"
[twilio]
account_sid = "{fake.account_sid}"
from_number = "+15005550006"
base_url = "{fake.url}"
messages_per_second = {RATE}
[centers.main]
name = "Anxin Auto"
timezone = "Asia/Shanghai"
send_from = "00:00"  # around the clock: workers send at the real hour, while these tests pretend one
send_until = "24:00"
[plugins.birthday]
enabled = true
""",
        encoding="utf-8",
    )
    return path


def max_in_any_second(stamps: list[datetime]) -> int:
    return max(sum(1 for t in stamps if 0 <= (t - start).total_seconds() < 1.0) for start in stamps)


def seed(runtime: Runtime, count: int) -> None:
    with runtime.sessions.begin() as session:
        for i in range(count):
            add_customer(
                session,
                external_id=f"C{i}",
                phone=f"+86138000{i:05d}",
                birthday=(1990, 5, 11),
                locale="zh_CN",
            )


@pytest.mark.services
@pytest.mark.parametrize("broker_url", [REDIS_URL, AMQP_URL], ids=["redis-pacer", "database-pacer"])
def test_two_worker_processes_share_one_sender_limit(
    broker_url: str, tmp_path: Path, fake_twilio: FakeTwilio, queue_name: str
) -> None:
    config = write_config(tmp_path, fake_twilio, broker_url, queue_name)
    env = {**__import__("os").environ, "CAREFLOW_CONFIG": str(config)}
    env["CAREFLOW_TWILIO__AUTH_TOKEN"] = fake_twilio.auth_token
    settings = load_settings(config, environ={"CAREFLOW_TWILIO__AUTH_TOKEN": fake_twilio.auth_token})
    runtime = build_runtime(settings)
    seed(runtime, MESSAGES)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "careflow.cli", "worker", "--threads", "4"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        run_day(runtime, now=NOW)  # remote broker: records and queues only
        deadline = time.monotonic() + 60
        while len(fake_twilio.messages) < MESSAGES and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.wait(timeout=30)
        if broker_url.startswith("amqp"):
            from tests.test_delivery_e2e import delete_rabbit_queue

            delete_rabbit_queue(queue_name)
        runtime.close()
    stamps = sorted(m.date_created for m in fake_twilio.messages)
    assert len(stamps) == MESSAGES and len({m.to for m in fake_twilio.messages}) == MESSAGES
    observed = (MESSAGES - 1) / (stamps[-1] - stamps[0]).total_seconds()
    print(
        f"{broker_url.split(':')[0]}: {MESSAGES} messages, observed {observed:.2f}/s with a limit of {RATE}/s"
    )
    assert observed <= RATE * 1.1
    assert max_in_any_second(stamps) <= RATE + 1  # +1: a window can hold both of its edges


def test_429_holds_the_sender_for_retry_after(tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    runtime = twilio_runtime(f"sqlite:///{tmp_path / 'c.db'}", fake_twilio)
    runtime.settings.twilio.messages_per_second = 50
    # One sender thread, so no other send had reserved its slot before the 429 came back.
    runtime.settings.broker.worker_threads = 1
    try:
        seed(runtime, 3)
        fake_twilio.queue_faults(Fault(status=429, code=20429, retry_after=1.5))
        started = datetime.now(UTC)
        run_day(runtime, now=NOW)
        assert len(fake_twilio.messages) == 3 and fake_twilio.requests == 4
        # Every later send waited out the provider's Retry-After, not only the retried one.
        assert min((m.date_created - started).total_seconds() for m in fake_twilio.messages) >= 1.4
        assert sorted(e.attempts for e in events(runtime)) == [1, 1, 2]
    finally:
        runtime.close()
