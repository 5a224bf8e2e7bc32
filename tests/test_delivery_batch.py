"""Batched delivery: many events per queue message, each with its own claim, attempt and outcome."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from dramatiq import Message, Worker
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import select, update

from careflow.delivery.actors import build_actors
from careflow.delivery.batch import deliver, deliver_many
from careflow.delivery.claims import claim_attempt
from careflow.delivery.recovery import recover_stuck_sends
from careflow.delivery.results import Outcome
from careflow.planning.plan import plan
from careflow.runtime import Runtime
from careflow.storage.models import CareEvent, Consent, Customer, EventStatus, utcnow
from careflow.testing.twilio_server import FakeTwilio, Fault
from tests.test_delivery_e2e import NOW, runtime_for, seed_birthdays, write_config


@pytest.fixture
def runtime(tmp_path: Path, db_url: str, fake_twilio: FakeTwilio) -> Iterator[Runtime]:
    """On SQLite and on PostgreSQL: each writes a batch's rows its own way (see careflow.delivery.rows)."""
    config = write_config(tmp_path, db_url=db_url, twilio=fake_twilio, max_attempts=3)
    with runtime_for(config, fake_twilio) as rt:
        yield rt


def planned(runtime: Runtime, count: int) -> dict[str, int]:
    """``count`` birthday events planned for NOW: phone -> event id."""
    seed_birthdays(runtime, count)
    plan(runtime, now=NOW)
    with runtime.sessions() as session:
        return {
            str(phone): event_id
            for phone, event_id in session.execute(select(CareEvent.recipient, CareEvent.id))
        }


def rows(runtime: Runtime) -> dict[int, CareEvent]:
    with runtime.sessions() as session:
        return {e.id: e for e in session.scalars(select(CareEvent))}


def test_every_event_of_a_batch_gets_its_own_outcome(runtime: Runtime, fake_twilio: FakeTwilio) -> None:
    ids = planned(runtime, 6)
    phones = sorted(ids)
    opted_out, invalid, flaky = phones[0], phones[1], phones[2]
    with runtime.sessions.begin() as session:  # an opt-out that arrived after planning
        customer_id = session.scalar(select(Customer.id).where(Customer.phone == opted_out))
        session.execute(update(Consent).where(Consent.customer_id == customer_id).values(granted=False))
    fake_twilio.fail_recipient(invalid, Fault(status=400, code=21211))
    fake_twilio.fail_recipient(flaky, Fault(status=503))

    result = deliver_many(runtime, list(ids.values()))

    assert result.outcomes == {
        ids[opted_out]: Outcome.SUPPRESSED,
        ids[invalid]: Outcome.FAILED,
        ids[flaky]: Outcome.RETRY,
        **{ids[p]: Outcome.SENT for p in phones[3:]},
    }
    assert result.attempts == {ids[flaky]: 1}  # the retry's backoff grows with its attempt
    events = rows(runtime)
    assert events[ids[flaky]].status == EventStatus.PLANNED and events[ids[flaky]].error_code == "20503"
    assert events[ids[invalid]].error_code == "21211"
    assert "withdrawn before sending" in (events[ids[opted_out]].status_reason or "")
    assert sorted(m.to for m in fake_twilio.messages) == phones[3:]  # each sent once
    for phone in phones[3:]:
        sent = events[ids[phone]]
        assert sent.status == EventStatus.SENT and sent.attempts == 1 and sent.body
        assert sent.provider_message_id == fake_twilio.sent_to(phone)[0].sid

    # The same batch again (a redelivered message): nothing is sent twice.
    again = deliver_many(runtime, list(ids.values()))
    assert {i: o for i, o in again.outcomes.items() if o is not Outcome.SKIPPED} == {
        ids[flaky]: Outcome.RETRY
    }
    assert len(fake_twilio.messages) == 3


def test_a_batch_hands_events_tried_before_to_single_delivery(
    runtime: Runtime, fake_twilio: FakeTwilio
) -> None:
    """A worker died mid-batch: its events come back planned and flagged; a batch won't take them
    again (one poison event must not dead-letter the rest), single deliveries reconcile and send."""
    ids = list(planned(runtime, 4).values())
    for event_id in ids[:2]:
        assert claim_attempt(runtime, event_id, utcnow()) == 1  # claimed, then the worker died
    assert len(recover_stuck_sends(runtime, older_than=timedelta(0))) == 2

    result = deliver_many(runtime, ids, isolate_retried=True)

    assert result.isolated == ids[:2]
    assert result.outcomes == {ids[2]: Outcome.SENT, ids[3]: Outcome.SENT}
    assert [deliver(runtime, i) for i in ids[:2]] == [Outcome.SENT, Outcome.SENT]
    assert fake_twilio.requests == 4  # looked up first (nothing there), then sent once each


def test_a_batch_out_of_time_hands_the_unsent_rest_back_uncounted(
    runtime: Runtime, fake_twilio: FakeTwilio
) -> None:
    ids = list(planned(runtime, 5).values())

    result = deliver_many(runtime, ids, time_budget=0.0)

    assert result.outcomes == {ids[0]: Outcome.SENT}  # the first send always goes
    assert result.released == ids[1:]
    events = rows(runtime)
    for event_id in ids[1:]:  # as if never claimed: planned, no attempt spent, fresh for a batch
        assert events[event_id].status == EventStatus.PLANNED and events[event_id].attempts == 0
    assert deliver_many(runtime, result.released).outcomes == dict.fromkeys(ids[1:], Outcome.SENT)
    assert len(fake_twilio.messages) == 5


def test_enqueued_events_travel_in_batches_and_retries_alone(
    runtime: Runtime, fake_twilio: FakeTwilio
) -> None:
    ids = planned(runtime, 7)
    fake_twilio.queue_faults(Fault(status=500))  # the first request fails, whichever event it carries
    broker = StubBroker()
    actors = build_actors(broker, runtime)
    actors.batch_size = 3
    broker.emit_after("process_boot")
    actors.enqueue_deliveries(sorted(ids.values()))
    queued = [Message.decode(m).actor_name for m in broker.queues[actors.queue].queue]
    assert queued == ["careflow_deliver_batch"] * 3  # 3 + 3 + 1 events

    worker = Worker(broker, worker_timeout=50)
    worker.start()
    try:
        broker.join(actors.queue, timeout=30_000)
        worker.join()
    finally:
        worker.stop()
    events = rows(runtime)
    assert {e.status for e in events.values()} == {EventStatus.SENT}
    assert sorted(m.to for m in fake_twilio.messages) == sorted(ids)  # each exactly once
    retried = [e for e in events.values() if e.attempts == 2]
    assert len(retried) == 1 and fake_twilio.requests == 8  # the failed one, retried alone


def test_a_status_callback_for_an_early_message_of_a_slow_batch_finds_its_event(
    runtime: Runtime, fake_twilio: FakeTwilio
) -> None:
    """With a slow provider a batch runs for seconds; Twilio's delivery report for its first
    message arrives meanwhile and must find the event (recorded, with its message id)."""
    import threading
    import time

    from careflow.web.webhooks import apply_status_callback

    ids = list(planned(runtime, 6).values())
    fake_twilio.set_latency(0.2)
    batch = threading.Thread(target=deliver_many, args=(runtime, ids))
    batch.start()
    try:
        deadline = time.monotonic() + 10
        # Sends 1-3 are recorded as the third is accepted (0.25 s after the first); by the
        # time the fourth reaches the provider that is done.
        while len(fake_twilio.messages) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        first = fake_twilio.messages[0]
        assert len(fake_twilio.messages) < 6  # the batch is still sending
        outcome = apply_status_callback(runtime, {"MessageSid": first.sid, "MessageStatus": "delivered"})
    finally:
        batch.join()
    assert outcome == "applied"
    statuses = sorted(str(e.status) for e in rows(runtime).values())
    assert statuses == ["delivered"] + ["sent"] * 5
