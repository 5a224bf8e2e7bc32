"""End to end: customers in, a care day planned, messages out through the real Twilio SDK.

The Twilio side is a local Twilio-compatible server (careflow.testing.twilio_server); its
log is the judge of what was sent. Brokers and databases are the real servers on this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pika
import pytest
from sqlalchemy import select

from careflow.config import load_settings
from careflow.delivery.batch import deliver
from careflow.delivery.results import Outcome
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import CareEvent, EventStatus
from careflow.testing import add_customer, build_runtime, parse_instant
from careflow.testing.twilio_server import FakeTwilio, Fault
from tests.conftest import AMQP_URL, REDIS_URL

NOW = parse_instant("2026-05-11T10:00:00+08:00")  # 10:00 in Shanghai
SENDER = "+15005550006"


def write_config(
    directory: Path,
    *,
    db_url: str,
    twilio: FakeTwilio,
    broker_url: str = "local",
    queue: str = "careflow",
    max_attempts: int = 4,
    send_window: tuple[str, str] = ("00:00", "24:00"),
) -> Path:
    path = directory / "careflow.toml"
    path.write_text(
        f"""
[database]
url = "{db_url}"
[broker]
url = "{broker_url}"
queue = "{queue}"
worker_threads = 4
[channels.sms]
provider = "twilio"
[twilio]
account_sid = "{twilio.account_sid}"
from_number = "{SENDER}"
base_url = "{twilio.url}"
timeout_seconds = 1.0
messages_per_second = 0  # unpaced: these tests are about delivery, not the rate limit
[centers.main]
name = "Anxin Auto"
timezone = "Asia/Shanghai"
locale = "zh_CN"
send_from = "{send_window[0]}"  # default: around the clock, as workers send at the real hour
send_until = "{send_window[1]}"
[delivery]
max_attempts = {max_attempts}
min_backoff_ms = 20
max_backoff_ms = 200
[plugins.birthday]
enabled = true
""",
        encoding="utf-8",
    )
    return path


@contextmanager
def runtime_for(config: Path, twilio: FakeTwilio) -> Iterator[Runtime]:
    # The secret comes from the environment, as it would in production.
    settings = load_settings(config, environ={"CAREFLOW_TWILIO__AUTH_TOKEN": twilio.auth_token})
    runtime = build_runtime(settings)
    try:
        yield runtime
    finally:
        runtime.close()


def seed_birthdays(runtime: Runtime, count: int, *, prefix: str = "C") -> dict[str, str]:
    """``count`` customers whose birthday is NOW's local day; returns external_id -> phone."""
    phones = {}
    with runtime.sessions.begin() as session:
        for i in range(count):
            phone = f"+86138{i:08d}"
            ext = f"{prefix}{i:04d}"
            add_customer(
                session, external_id=ext, name=f"客户{i}", phone=phone, birthday=(1990, 5, 11), locale="zh_CN"
            )
            phones[ext] = phone
    return phones


def statuses(runtime: Runtime) -> dict[str, int]:
    with runtime.sessions() as session:
        counts: dict[str, int] = {}
        for status in session.scalars(select(CareEvent.status)):
            counts[status] = counts.get(status, 0) + 1
        return counts


def test_local_run_sends_each_birthday_once_through_the_twilio_sdk(
    db_url: str, tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    config = write_config(tmp_path, db_url=db_url, twilio=fake_twilio)
    with runtime_for(config, fake_twilio) as runtime:
        phones = seed_birthdays(runtime, 5)
        with runtime.sessions.begin() as session:  # not due today: must not be messaged
            add_customer(session, external_id="OTHER", phone="+8613900000001", birthday=(1990, 6, 1))

        result = run_day(runtime, now=NOW)

        assert result.report.new == 5
        assert sorted(m.to for m in fake_twilio.messages) == sorted(phones.values())
        for message in fake_twilio.messages:
            assert message.from_ == SENDER
            assert "生日快乐" in message.body and "Anxin Auto" in message.body
            assert message.body.endswith("回T退订")  # marketing SMS carry the opt-out footer
        assert statuses(runtime) == {"sent": 5}
        with runtime.sessions() as session:
            ids = set(session.scalars(select(CareEvent.provider_message_id)))
        assert ids == {m.sid for m in fake_twilio.messages}

        # Re-running the same day, even later that day, sends nothing new.
        again = run_day(runtime, now=parse_instant("2026-05-11T18:00:00+08:00"))
        assert again.report.new == 0 and again.report.already_recorded == 5
        assert len(fake_twilio.messages) == 5


def test_permanent_errors_fail_without_retry_and_transient_errors_retry_once(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    config = write_config(tmp_path, db_url=f"sqlite:///{tmp_path / 'c.db'}", twilio=fake_twilio)
    with runtime_for(config, fake_twilio) as runtime:
        phones = seed_birthdays(runtime, 3)
        bad, not_mobile, good = phones["C0000"], phones["C0001"], phones["C0002"]
        fake_twilio.fail_recipient(bad, Fault(status=400, code=21211))
        fake_twilio.fail_recipient(not_mobile, Fault(status=400, code=21614))
        # The first create request of the run gets a 500; whichever event it hits is retried.
        fake_twilio.queue_faults(Fault(status=500))

        run_day(runtime, now=NOW)

        with runtime.sessions() as session:
            events = {e.recipient: e for e in session.scalars(select(CareEvent))}
        assert events[bad].status == EventStatus.FAILED and events[bad].error_code == "21211"
        assert "invalid 'To'" in (events[bad].status_reason or "")
        assert events[not_mobile].status == EventStatus.FAILED and events[not_mobile].error_code == "21614"
        assert events[good].status == EventStatus.SENT
        assert [m.to for m in fake_twilio.messages] == [good]  # sent once
        # 3 first attempts + exactly one retry of the 500; permanent errors were not retried.
        assert fake_twilio.requests == 4
        retried = [e for e in events.values() if e.attempts == 2]
        assert len(retried) == 1


def test_500_then_success_is_sent_exactly_once(tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    config = write_config(tmp_path, db_url=f"sqlite:///{tmp_path / 'c.db'}", twilio=fake_twilio)
    with runtime_for(config, fake_twilio) as runtime:
        seed_birthdays(runtime, 1)
        fake_twilio.queue_faults(Fault(status=500))
        run_day(runtime, now=NOW)
        assert fake_twilio.requests == 2
        assert len(fake_twilio.messages) == 1
        assert statuses(runtime) == {"sent": 1}


def test_a_lost_reply_is_reconciled_instead_of_resent(tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    """Twilio accepted the message but the answer never came: the retry must find it, not resend it."""
    config = write_config(tmp_path, db_url=f"sqlite:///{tmp_path / 'c.db'}", twilio=fake_twilio)
    with runtime_for(config, fake_twilio) as runtime:
        seed_birthdays(runtime, 1)
        fake_twilio.queue_faults(Fault(status=500, hang_seconds=3.0, record=True))  # client times out at 1 s
        run_day(runtime, now=NOW)
        assert len(fake_twilio.messages) == 1
        assert fake_twilio.requests == 1  # the second attempt looked the message up instead
        with runtime.sessions() as session:
            event = session.scalars(select(CareEvent)).one()
        assert event.status == EventStatus.SENT
        assert event.provider_message_id == fake_twilio.messages[0].sid


def test_transient_errors_give_up_after_max_attempts(tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    config = write_config(
        tmp_path, db_url=f"sqlite:///{tmp_path / 'c.db'}", twilio=fake_twilio, max_attempts=3
    )
    with runtime_for(config, fake_twilio) as runtime:
        seed_birthdays(runtime, 1)
        fake_twilio.queue_faults(*[Fault(status=429) for _ in range(10)])
        run_day(runtime, now=NOW)
        with runtime.sessions() as session:
            event = session.scalars(select(CareEvent)).one()
        assert event.status == EventStatus.FAILED
        assert event.attempts == 3 and fake_twilio.requests == 3
        assert "gave up after 3 attempts" in (event.status_reason or "")
        assert fake_twilio.messages == []


def test_racing_deliveries_send_each_event_once(db_url: str, tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    """Two workers handed the same events at the same moment: the compare-and-set claim lets one send."""
    config = write_config(tmp_path, db_url=db_url, twilio=fake_twilio)
    fake_twilio.set_latency(0.02)
    with runtime_for(config, fake_twilio) as first, runtime_for(config, fake_twilio) as second:
        seed_birthdays(first, 20)
        from careflow.planning.plan import plan

        plan(first, now=NOW)
        with first.sessions() as session:
            ids = list(session.scalars(select(CareEvent.id)))
        outcomes: list[Outcome] = []
        lock = threading.Lock()
        barrier = threading.Barrier(4)

        def work(runtime: Runtime) -> None:
            barrier.wait()
            for event_id in ids:
                outcome = deliver(runtime, event_id)
                with lock:
                    outcomes.append(outcome)

        threads = [threading.Thread(target=work, args=(rt,)) for rt in (first, second, first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count(Outcome.SENT) == 20
        assert outcomes.count(Outcome.SKIPPED) == 60
        assert len(fake_twilio.messages) == 20
        assert len({m.to for m in fake_twilio.messages}) == 20


def careflow_cmd(*args: str, config: Path, auth_token: str) -> list[str]:
    return [sys.executable, "-m", "careflow.cli", *args]


def worker_env(config: Path, auth_token: str) -> dict[str, str]:
    env = dict(os.environ)
    env["CAREFLOW_CONFIG"] = str(config)
    env["CAREFLOW_TWILIO__AUTH_TOKEN"] = auth_token
    return env


def wait_until_final(runtime: Runtime, expected: int, timeout: float = 60.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = statuses(runtime)
        if sum(counts.values()) >= expected and not counts.get("planned") and not counts.get("sending"):
            return counts
        time.sleep(0.2)
    raise AssertionError(f"events not delivered in {timeout} s: {statuses(runtime)}")


def delete_rabbit_queue(queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
        channel.queue_delete(name)
    connection.close()


@pytest.mark.services
@pytest.mark.parametrize("broker_url", [REDIS_URL, AMQP_URL], ids=["redis", "rabbitmq"])
def test_remote_broker_with_real_workers(
    broker_url: str, db_url: str, queue_name: str, tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    """`careflow run` only queues; two `careflow worker` processes deliver, each event once."""
    config = write_config(
        tmp_path, db_url=db_url, twilio=fake_twilio, broker_url=broker_url, queue=queue_name
    )
    env = worker_env(config, fake_twilio.auth_token)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "careflow.cli", "worker", "--threads", "4"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        with runtime_for(config, fake_twilio) as runtime:
            phones = seed_birthdays(runtime, 30)
            ran = subprocess.run(
                [sys.executable, "-m", "careflow.cli", "run", "--now", NOW.isoformat(), "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert ran.returncode == 0, ran.stderr
            planned = [json.loads(line) for line in ran.stdout.splitlines()]
            assert len(planned) == 30
            assert {p["to"] for p in planned} == set(phones.values())

            counts = wait_until_final(runtime, 30)
            assert counts == {"sent": 30}
            assert sorted(m.to for m in fake_twilio.messages) == sorted(phones.values())

            # The same day again: nothing new is queued or sent.
            again = subprocess.run(
                [sys.executable, "-m", "careflow.cli", "run", "--now", NOW.isoformat(), "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert again.returncode == 0, again.stderr
            time.sleep(1.0)
            assert len(fake_twilio.messages) == 30
    finally:
        for proc in workers:
            proc.terminate()
        for proc in workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if broker_url.startswith("amqp"):
            delete_rabbit_queue(queue_name)
    for proc in workers:
        assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
