"""The broker restarts mid-run, and a send outlasts the Redis heartbeat timeout (redelivery in flight)."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from careflow.service.care_run import run_day
from careflow.storage.models import CareEvent
from careflow.testing.twilio_server import FakeTwilio, Fault
from tests.faults.harness import (
    NOW,
    Deployment,
    RabbitVhost,
    RedisServer,
    all_final,
    assert_sent_exactly_once,
    seed_birthdays,
    wait_until,
)

EVENTS = 600


def test_redis_restart_without_persistence_loses_nothing_and_doubles_nothing(
    pg_url: str, own_redis: RedisServer, deploy: Callable[..., Deployment], fake_twilio: FakeTwilio
) -> None:
    """SHUTDOWN NOSAVE drops every queued message; the outbox and the scheduler bring them back."""
    site = deploy(db_url=pg_url, broker_url=own_redis.url, scheduler={"requeue_after_seconds": 4})
    fake_twilio.set_latency(0.01)
    with site.runtime() as runtime:
        phones = seed_birthdays(runtime, EVENTS)
        assert run_day(runtime, now=NOW).report.new == EVENTS
        site.scheduler()
        site.worker()
        wait_until(lambda: len(fake_twilio.messages) >= EVENTS // 4, timeout=60, what="a quarter sent")
        own_redis.stop()
        at_stop = len(fake_twilio.messages)
        time.sleep(1.0)  # workers and scheduler see the broker gone
        own_redis.start()  # empty: the queue and every unacknowledged message are lost
        final = wait_until(lambda: all_final(runtime, EVENTS), timeout=120, what="every event final")
        time.sleep(1.0)
        assert final == {"sent": EVENTS}
        assert_sent_exactly_once(runtime, fake_twilio, phones)
        requeued = [
            int(m.group(1))
            for line in site.log_lines("scheduler", "re-queued")
            if (m := re.search(r"(\d+) planned event\(s\) re-queued", line))
        ]
        assert sum(requeued) > 0  # the lost messages came back from the outbox, not from Redis
        assert site.processes["worker"].poll() is None  # the worker rode out the outage
        print(
            f"\nredis restart figures: {EVENTS} events; provider had {at_stop} when Redis went down; "
            f"scheduler re-queued {sum(requeued)} from the outbox; provider total "
            f"{len(fake_twilio.messages)}, create requests {fake_twilio.requests}, max per recipient 1"
        )


def test_rabbitmq_connections_dropped_mid_run_lose_nothing_and_double_nothing(
    rabbit_vhost: RabbitVhost,
    deploy: Callable[..., Deployment],
    tmp_path: Path,
    fake_twilio: FakeTwilio,
) -> None:
    """Every connection of the run is closed by the broker (what a restart looks like to clients):
    unacknowledged messages are redelivered, some while their first delivery is still sending."""
    site = deploy(
        db_url=f"sqlite:///{tmp_path / 'rabbit.db'}",
        broker_url=rabbit_vhost.url,
        scheduler={"requeue_after_seconds": 10},
    )
    fake_twilio.set_latency(0.01)
    with site.runtime() as runtime:
        phones = seed_birthdays(runtime, EVENTS)
        assert run_day(runtime, now=NOW).report.new == EVENTS
        site.scheduler()
        site.worker()
        wait_until(lambda: len(fake_twilio.messages) >= EVENTS // 4, timeout=60, what="a quarter sent")
        rabbit_vhost.drop_connections()
        at_drop = len(fake_twilio.messages)
        final = wait_until(lambda: all_final(runtime, EVENTS), timeout=120, what="every event final")
        time.sleep(1.0)
        assert final == {"sent": EVENTS}
        assert_sent_exactly_once(runtime, fake_twilio, phones)
        assert site.processes["worker"].poll() is None
        print(
            f"\nrabbitmq connection-drop figures: {EVENTS} events; provider had {at_drop} at the drop; "
            f"provider total {len(fake_twilio.messages)}, create requests {fake_twilio.requests}"
        )


def test_a_send_slower_than_the_heartbeat_timeout_is_redelivered_but_sent_once(
    own_redis: RedisServer, deploy: Callable[..., Deployment], tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    """Worker A is in the middle of a slow send and its heartbeats stop; Redis hands A's messages
    to worker B while A still sends. B must skip the one A is sending and send the other once.

    A slow send alone silences a worker's heartbeat only while every prefetch slot is busy and
    its delay-queue consumer is between polls, which is a matter of luck; so A is also frozen
    (SIGSTOP, like a long GC pause or a starved VM) for the length of its send, which makes the
    redelivery certain. Its send is already at the provider and completes when A is thawed.
    """
    site = deploy(
        db_url=f"sqlite:///{tmp_path / 'heartbeat.db'}",
        broker_url=own_redis.url,
        broker={"heartbeat_timeout_ms": 500},
        twilio={"timeout_seconds": 20.0},
        # One event per message, so that B is handed the one A has not started (batches below).
        delivery={"time_limit_ms": 30_000, "batch_size": 1},
    )
    with site.runtime() as runtime:
        phones = seed_birthdays(runtime, 2)
        slow = Fault(status=201, hang_seconds=3.0)  # accepted at once, answered after 3 s
        for phone in phones:
            fake_twilio.fail_recipient(phone, slow)
        assert run_day(runtime, now=NOW).report.new == 2
        worker_a = site.worker("worker-a", threads=1)  # prefetches both, sends one at a time
        first = wait_until(lambda: fake_twilio.messages, timeout=30, what="A's first send to arrive")[0]
        with runtime.sessions() as session:
            in_flight = session.scalars(select(CareEvent).where(CareEvent.recipient == first.to)).one()
        assert in_flight.status == "sending"
        worker_a.send_signal(signal.SIGSTOP)
        try:
            site.worker("worker-b", threads=1)
            skipped = wait_until(
                lambda: site.log_lines("worker-b", f"event {in_flight.id}: skipped (status sending)"),
                timeout=30,
                what="B to be handed the message A is still sending",
            )
            assert skipped
            wait_until(lambda: len(fake_twilio.messages) == 2, timeout=30, what="B to send the other event")
        finally:
            worker_a.send_signal(signal.SIGCONT)
        wait_until(lambda: all_final(runtime, 2), timeout=60, what="both events final")
        time.sleep(1.0)
        assert_sent_exactly_once(runtime, fake_twilio, phones)
        assert fake_twilio.requests == 2
        # A finished its slow send and recorded it; the other event was B's, and A skipped it
        # (B may still have been sending it when A was thawed, or may have finished).
        with runtime.sessions() as session:
            events = {e.id: e for e in session.scalars(select(CareEvent))}
        assert events[in_flight.id].attempts == 1
        (other,) = set(events) - {in_flight.id}
        assert events[other].attempts == 1
        assert site.log_lines("worker-a", f"event {other}: skipped (status s")


def test_a_batch_redelivered_while_its_worker_is_frozen_is_sent_once_by_that_worker(
    own_redis: RedisServer, deploy: Callable[..., Deployment], tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    """The same freeze with the default batches: A holds every event of the batch it claimed,
    so B, handed the redelivered batch, skips them all; A, thawed, sends the rest once."""
    site = deploy(
        db_url=f"sqlite:///{tmp_path / 'heartbeat-batch.db'}",
        broker_url=own_redis.url,
        broker={"heartbeat_timeout_ms": 500},
        twilio={"timeout_seconds": 20.0},
        delivery={"time_limit_ms": 30_000},
    )
    with site.runtime() as runtime:
        phones = seed_birthdays(runtime, 3)
        slow = Fault(status=201, hang_seconds=3.0)
        fake_twilio.fail_recipient(phones[0], slow)  # the batch's first send is slow; A freezes in it
        assert run_day(runtime, now=NOW).report.new == 3
        worker_a = site.worker("worker-a", threads=1)
        wait_until(lambda: fake_twilio.messages, timeout=30, what="A's first send to arrive")
        worker_a.send_signal(signal.SIGSTOP)
        try:
            site.worker("worker-b", threads=1)
            with runtime.sessions() as session:
                ids = sorted(session.scalars(select(CareEvent.id)))
            for event_id in ids:
                wait_until(
                    lambda event_id=event_id: site.log_lines(
                        "worker-b", f"event {event_id}: skipped (status sending)"
                    ),
                    timeout=30,
                    what=f"B to skip event {event_id}, which A holds",
                )
            assert len(fake_twilio.messages) == 1  # nothing more while A is frozen
        finally:
            worker_a.send_signal(signal.SIGCONT)
        wait_until(lambda: all_final(runtime, 3), timeout=60, what="every event final")
        time.sleep(1.0)
        assert_sent_exactly_once(runtime, fake_twilio, phones)
        assert fake_twilio.requests == 3
        with runtime.sessions() as session:
            assert {e.attempts for e in session.scalars(select(CareEvent))} == {1}
