"""Exactly-once under crashes, bounded poison messages, leases, the always-on scheduler, retry and doctor.

In-process and fast; the same guarantees with real worker processes and brokers are in tests/faults/.
A "crash" here is a claim that is never finished, which is exactly what a killed worker leaves.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update

from careflow.channels.base import OutgoingMessage
from careflow.cli import main
from careflow.config import load_settings
from careflow.delivery.batch import deliver
from careflow.delivery.claims import DEAD_LETTER, claim_attempt
from careflow.delivery.prepare import prepare_one
from careflow.delivery.provider_status import apply_report
from careflow.delivery.recovery import lost_planned_ids, recover_stuck_sends
from careflow.delivery.results import Outcome
from careflow.delivery.rows import finish
from careflow.hookspecs import hookimpl
from careflow.planning.plan import plan
from careflow.runtime import Runtime
from careflow.service.scheduler import LEASE_NAME, JobContext, SchedulerService, default_jobs
from careflow.storage import leases
from careflow.storage.models import CareEvent, Customer, EarlyStatus, EventStatus, SchedulerRun, utcnow
from careflow.testing import build_runtime, parse_instant
from careflow.testing.twilio_server import FakeTwilio, Fault
from tests.test_delivery_e2e import NOW, runtime_for, seed_birthdays, worker_env, write_config


def planned_ids(runtime: Runtime) -> list[int]:
    plan(runtime, now=NOW)
    with runtime.sessions() as session:
        return list(session.scalars(select(CareEvent.id).order_by(CareEvent.id)))


def event(runtime: Runtime, event_id: int) -> CareEvent:
    with runtime.sessions() as session:
        found = session.get(CareEvent, event_id)
        assert found is not None
        return found


def crash_after_provider_accepted(runtime: Runtime, event_id: int) -> None:
    """What a worker killed right after Twilio answered leaves behind: a sent message, a 'sending' row."""
    attempt = claim_attempt(runtime, event_id, utcnow())
    assert isinstance(attempt, int)
    prepared = prepare_one(runtime, event_id, attempt)
    assert not isinstance(prepared, Outcome)
    runtime.channel("sms").send(prepared[0])


@pytest.fixture
def twilio_runtime(tmp_path: Path, fake_twilio: FakeTwilio) -> Runtime:
    config = write_config(
        tmp_path, db_url=f"sqlite:///{tmp_path / 'c.db'}", twilio=fake_twilio, max_attempts=3
    )
    with runtime_for(config, fake_twilio) as runtime:
        yield runtime  # type: ignore[misc]


def test_a_worker_killed_after_the_provider_accepted_does_not_cause_a_second_send(
    twilio_runtime: Runtime, fake_twilio: FakeTwilio
) -> None:
    seed_birthdays(twilio_runtime, 2)
    accepted, never_sent = planned_ids(twilio_runtime)
    crash_after_provider_accepted(twilio_runtime, accepted)
    claim_attempt(twilio_runtime, never_sent, utcnow())  # killed before it reached the provider
    assert len(fake_twilio.messages) == 1

    # A redelivered message meanwhile is a no-op: the row is still claimed.
    assert deliver(twilio_runtime, accepted) is Outcome.SKIPPED
    assert len(recover_stuck_sends(twilio_runtime, older_than=timedelta(0))) == 2
    assert deliver(twilio_runtime, accepted) is Outcome.SENT
    assert deliver(twilio_runtime, never_sent) is Outcome.SENT

    messages = fake_twilio.messages
    assert sorted(m.to for m in messages) == sorted({m.to for m in messages})  # one each
    assert len(messages) == 2 and fake_twilio.requests == 2  # the accepted one was looked up, not resent
    first = event(twilio_runtime, accepted)
    assert first.status == EventStatus.SENT and first.attempts == 2 and not first.needs_reconcile
    assert first.provider_message_id == next(m.sid for m in messages if m.to == first.recipient)


def test_a_message_still_in_twilios_queue_is_found_not_sent_again(
    twilio_runtime: Runtime, fake_twilio: FakeTwilio
) -> None:
    # On a big day Twilio queues what a sender cannot send yet: no date_sent, so a look-up by
    # DateSent alone would miss it and the event would be sent a second time.
    seed_birthdays(twilio_runtime, 1)
    (event_id,) = planned_ids(twilio_runtime)
    fake_twilio.hold_in_queue()
    crash_after_provider_accepted(twilio_runtime, event_id)
    (queued,) = fake_twilio.messages
    assert queued.date_sent is None and queued.status == "queued"

    assert len(recover_stuck_sends(twilio_runtime, older_than=timedelta(0))) == 1
    assert deliver(twilio_runtime, event_id) is Outcome.SENT
    assert fake_twilio.requests == 1  # looked up, not sent again
    assert event(twilio_runtime, event_id).provider_message_id == queued.sid

    fake_twilio.release_queue()
    assert [m.status for m in fake_twilio.messages] == ["sent"]


def test_a_body_rewritten_by_smart_encoding_is_still_recognised_and_another_is_not(
    twilio_runtime: Runtime, fake_twilio: FakeTwilio
) -> None:
    # Messaging Services rewrite curly quotes, long dashes and the ellipsis by default.
    fake_twilio.use_smart_encoding()
    channel = twilio_runtime.channel("sms")
    since = utcnow() - timedelta(minutes=5)
    ours = OutgoingMessage(
        event_id=1,
        channel="sms",
        to="+8613800000001",
        body="“Happy birthday!” — see you soon…",
        center_code="bj",
    )
    sent = channel.send(ours)
    (stored,) = fake_twilio.messages
    assert stored.body == '"Happy birthday!" - see you soon...'  # what Twilio now holds

    found = channel.lookup(ours, since)
    assert found is not None and found.provider_message_id == sent.provider_message_id
    other = replace(ours, body="“Happy birthday!” — see you next week…")
    assert channel.lookup(other, since) is None
    assert fake_twilio.requests == 1


def test_a_delivery_report_that_comes_before_the_send_is_recorded_is_applied_when_it_is(
    twilio_runtime: Runtime, fake_twilio: FakeTwilio
) -> None:
    # The worker died after Twilio accepted the message, so no event has its id yet when
    # Twilio reports it undelivered; recovery later finds the message and records it.
    from careflow.web.webhooks import apply_status_callback

    seed_birthdays(twilio_runtime, 1)
    (event_id,) = planned_ids(twilio_runtime)
    crash_after_provider_accepted(twilio_runtime, event_id)
    (accepted,) = fake_twilio.messages
    report = {"MessageSid": accepted.sid, "MessageStatus": "undelivered", "ErrorCode": "30003"}
    assert apply_status_callback(twilio_runtime, report) == "parked"
    assert apply_status_callback(twilio_runtime, {**report, "MessageStatus": "delivered"}) == "parked"

    recover_stuck_sends(twilio_runtime, older_than=timedelta(0))
    assert deliver(twilio_runtime, event_id) is Outcome.SENT  # found at the provider, not resent
    found = event(twilio_runtime, event_id)
    assert fake_twilio.requests == 1 and found.provider_message_id == accepted.sid
    # The first final report wins, as when reports arrive after the record.
    assert found.status == EventStatus.UNDELIVERED and found.error_code == "30003"
    with twilio_runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(EarlyStatus)) == 0
    assert apply_status_callback(twilio_runtime, report) == "no change"


def test_the_scheduler_applies_reports_parked_for_a_send_recorded_elsewhere_and_drops_stale_ones(
    twilio_runtime: Runtime,
) -> None:
    seed_birthdays(twilio_runtime, 1)
    (event_id,) = planned_ids(twilio_runtime)
    now = utcnow()
    with twilio_runtime.sessions.begin() as session:
        assert apply_report(session, "SMnew", "delivered", None, now=now) == "parked"
        assert apply_report(session, "SMgone", "failed", "30008", now=now - timedelta(days=8)) == "parked"
        # Recorded by a path that does not look for parked reports (or raced with the report).
        session.execute(
            update(CareEvent)
            .where(CareEvent.id == event_id)
            .values(status=EventStatus.SENT, provider_message_id="SMnew")
        )
    reports: list[str] = []
    job = next(j for j in default_jobs() if j.name == "provider-reports")
    job.run(JobContext(twilio_runtime, now, lambda ids: None, "me", lambda: None, reports.append))
    assert event(twilio_runtime, event_id).status == EventStatus.DELIVERED
    assert reports == ["applied 1 delivery report(s) that arrived before their send was recorded"]
    with twilio_runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(EarlyStatus)) == 0  # SMgone: dropped


def test_a_claimant_that_lost_its_claim_cannot_overwrite_the_next_attempt(twilio_runtime: Runtime) -> None:
    seed_birthdays(twilio_runtime, 1)
    (event_id,) = planned_ids(twilio_runtime)
    assert claim_attempt(twilio_runtime, event_id, utcnow()) == 1
    recover_stuck_sends(twilio_runtime, older_than=timedelta(0))
    assert claim_attempt(twilio_runtime, event_id, utcnow()) == 2
    # The first worker wakes up and reports a failure: attempt 1 no longer holds the row.
    assert not finish(twilio_runtime, event_id, 1, EventStatus.FAILED, status_reason="stale")
    assert event(twilio_runtime, event_id).status == EventStatus.SENDING


def test_a_poison_message_is_dead_lettered_after_max_attempts(
    twilio_runtime: Runtime, fake_twilio: FakeTwilio
) -> None:
    seed_birthdays(twilio_runtime, 1)
    (event_id,) = planned_ids(twilio_runtime)
    for attempt in (1, 2, 3):  # max_attempts = 3; each attempt "kills the worker" after the claim
        assert claim_attempt(twilio_runtime, event_id, utcnow()) == attempt
        assert event(twilio_runtime, event_id).attempts == attempt  # counted before the dangerous work
        recover_stuck_sends(twilio_runtime, older_than=timedelta(0))
    assert deliver(twilio_runtime, event_id) is Outcome.FAILED
    dead = event(twilio_runtime, event_id)
    assert dead.status == EventStatus.FAILED and dead.error_code == DEAD_LETTER
    assert "3 attempts ended without an outcome" in (dead.status_reason or "")
    assert deliver(twilio_runtime, event_id) is Outcome.SKIPPED  # never again
    assert fake_twilio.requests == 0


def test_lost_planned_events_are_requeued_once_per_interval(twilio_runtime: Runtime) -> None:
    seed_birthdays(twilio_runtime, 3)
    ids = planned_ids(twilio_runtime)
    later = utcnow() + timedelta(minutes=20)
    assert lost_planned_ids(twilio_runtime, older_than=timedelta(minutes=15), now=later) == ids
    # Handed out just now: not again until another interval has passed.
    assert lost_planned_ids(twilio_runtime, older_than=timedelta(minutes=15), now=later) == []
    assert lost_planned_ids(
        twilio_runtime, older_than=timedelta(minutes=15), now=later + timedelta(minutes=16)
    )


def test_lease_compare_and_set(db_url: str, tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    config = write_config(tmp_path, db_url=db_url, twilio=fake_twilio)
    with runtime_for(config, fake_twilio) as runtime:
        sessions, ttl, t0 = runtime.sessions, timedelta(seconds=30), utcnow()
        assert leases.acquire(sessions, "s", "a", ttl=ttl, now=t0)
        assert not leases.acquire(sessions, "s", "b", ttl=ttl, now=t0 + timedelta(seconds=10))
        assert leases.acquire(sessions, "s", "a", ttl=ttl, now=t0 + timedelta(seconds=20))  # renewal
        assert not leases.acquire(sessions, "s", "b", ttl=ttl, now=t0 + timedelta(seconds=45))
        assert leases.acquire(sessions, "s", "b", ttl=ttl, now=t0 + timedelta(seconds=51))  # expired
        assert leases.holder_of(sessions, "s", now=t0 + timedelta(seconds=52)) == "b"
        leases.release(sessions, "s", "b", now=t0 + timedelta(seconds=53))
        assert leases.acquire(sessions, "s", "a", ttl=ttl, now=t0 + timedelta(seconds=54))


def test_the_scheduler_plans_each_center_at_its_local_time_once(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    config = write_config(
        tmp_path, db_url=f"sqlite:///{tmp_path / 'c.db'}", twilio=fake_twilio, send_window=("09:00", "20:00")
    )
    with runtime_for(config, fake_twilio) as runtime:
        seed_birthdays(runtime, 4)
        queued: list[int] = []
        notes: list[str] = []
        leader = SchedulerService(runtime, holder="a", enqueue=queued.extend, report=notes.append)
        standby = SchedulerService(runtime, holder="b", enqueue=queued.extend, report=notes.append)
        before = parse_instant("2026-05-11T07:59:00+08:00")  # plan_at defaults to 08:00 local
        assert leader.tick(before) and not standby.tick(before)
        assert queued == []
        at = parse_instant("2026-05-11T08:00:00+08:00")
        assert leader.tick(at)
        # Planned at 08:00, before the 09:00 sending window: recorded and deferred, not queued.
        assert queued == []
        assert leader.tick(at + timedelta(minutes=30)) and queued == []
        opening = parse_instant("2026-05-11T09:00:00+08:00")
        assert leader.tick(opening) and not standby.tick(opening)
        assert len(queued) == 4  # the release-deferred job queued them when the window opened
        assert leader.tick(opening + timedelta(hours=1))
        assert len(queued) == 4  # planned and released once per center and day
        with runtime.sessions() as session:
            runs = session.scalars(select(SchedulerRun.job).order_by(SchedulerRun.job)).all()
            assert runs == ["plan:main", "segments:main"]  # the day's plan, and its segments computed once
            assert session.scalar(select(func.count()).select_from(CareEvent)) == 4
        assert notes[0] == "leader: a"
        assert any(n.startswith("plan end main 2026-05-11: 4 new") for n in notes)
        assert "released 4 deferred event(s)" in notes
        assert leases.holder_of(runtime.sessions, LEASE_NAME, now=utcnow()) == "a"


def test_the_scheduler_runs_its_jobs_in_order() -> None:
    # Segments before planning, so a tick that reaches both plans with today's segments.
    assert [job.name for job in default_jobs()] == [
        "segments",
        "plan",
        "replan",
        "release-deferred",
        "recover",
        "provider-reports",
    ]


def test_retry_requeues_fixed_failures_and_events_explains_them(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    config = write_config(tmp_path, db_url=f"sqlite:///{tmp_path / 'c.db'}", twilio=fake_twilio)
    env = worker_env(config, fake_twilio.auth_token)
    with runtime_for(config, fake_twilio) as runtime:
        phones = seed_birthdays(runtime, 3)
    fake_twilio.fail_recipient(phones["C0001"], Fault(status=400, code=21612))
    runner = CliRunner()
    ran = runner.invoke(main, ["run", "--now", NOW.isoformat()], env=env)
    assert ran.exit_code == 0, ran.output
    listed = runner.invoke(main, ["events", "--status", "failed", "--json"], env=env)
    assert '"error_code": "21612"' in listed.output and "cannot route to this number" in listed.output

    nothing = runner.invoke(main, ["retry"], env=env)
    assert nothing.exit_code == 1 and "say which events" in nothing.output
    fake_twilio.reset()  # the operator fixed the routing
    retried = runner.invoke(main, ["retry", "--status", "failed", "--plugin", "birthday"], env=env)
    assert retried.exit_code == 0, retried.output
    assert "retried 1 event(s): 1 sent" in retried.output
    assert [m.to for m in fake_twilio.messages] == [phones["C0001"]]
    sent = runner.invoke(main, ["retry", "1"], env=env)
    assert sent.exit_code == 1 and "not failed" in sent.output


def test_doctor_passes_on_a_healthy_setup_and_explains_each_problem(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    config = write_config(tmp_path, db_url=f"sqlite:///{tmp_path / 'c.db'}", twilio=fake_twilio)
    env = worker_env(config, fake_twilio.auth_token)
    runner = CliRunner()
    fresh = runner.invoke(main, ["doctor"], env=env)
    assert fresh.exit_code == 1 and "not initialised" in fresh.output and "careflow init" in fresh.output
    with runtime_for(config, fake_twilio):
        pass  # migrates
    healthy = runner.invoke(main, ["doctor"], env=env)
    assert healthy.exit_code == 0, healthy.output
    assert "✗" not in healthy.output and "all checks passed" in healthy.output
    assert "credentials accepted" in healthy.output and "template variant(s) render" in healthy.output

    broken = tmp_path / "tpl" / "birthday"
    broken.mkdir(parents=True)
    (broken / "sms.en.j2").write_text("Hi {{ customer.name | nosuchfilter }}", encoding="utf-8")
    bad_env = {
        **env,
        "CAREFLOW_TWILIO__AUTH_TOKEN": "wrong",
        "CAREFLOW_BROKER__URL": "redis://127.0.0.1:1/0",
        "CAREFLOW_TEMPLATES__DIR": str(tmp_path / "tpl"),
    }
    sick = runner.invoke(main, ["doctor"], env=bad_env)
    assert sick.exit_code == 1, sick.output
    assert "3 problem(s) found" in sick.output
    assert "fix: set the right twilio.account_sid and CAREFLOW_TWILIO__AUTH_TOKEN" in sick.output
    assert "127.0.0.1:1/0: cannot connect" in sick.output
    assert "birthday/sms.en.j2" in sick.output and "nosuchfilter" in sick.output
    assert "wrong" not in sick.output  # the secret is never printed


class BrokenContextPlugin:
    """A plugin whose template-context hook raises for one customer (a bug, not a crash)."""

    @hookimpl
    def careflow_template_context(self, event: CareEvent, customer: Customer) -> dict[str, object] | None:
        if customer.external_id == "C0001":
            raise RuntimeError("weather lookup exploded")
        return None


def test_a_plugin_error_while_preparing_is_retried_then_fails_with_the_reason(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    config = write_config(
        tmp_path, db_url=f"sqlite:///{tmp_path / 'c.db'}", twilio=fake_twilio, max_attempts=2
    )
    settings = load_settings(config, environ={"CAREFLOW_TWILIO__AUTH_TOKEN": fake_twilio.auth_token})
    runtime = build_runtime(settings, extra_plugins=[BrokenContextPlugin()])
    try:
        phones = seed_birthdays(runtime, 2)
        ids = planned_ids(runtime)
        outcomes = [deliver(runtime, i) for i in ids]
        assert sorted(outcomes) == sorted([Outcome.SENT, Outcome.RETRY])
        broken = next(i for i, o in zip(ids, outcomes, strict=True) if o is Outcome.RETRY)
        first = event(runtime, broken)
        assert first.status == EventStatus.PLANNED and first.attempts == 1 and first.body is None
        assert "attempt 1: preparing the message failed: RuntimeError: weather lookup exploded" in (
            first.status_reason or ""
        )
        assert deliver(runtime, broken) is Outcome.FAILED
        final = event(runtime, broken)
        assert final.status == EventStatus.FAILED and "gave up after 2 attempts" in (
            final.status_reason or ""
        )
        assert [m.to for m in fake_twilio.messages] == [phones["C0000"]]
    finally:
        runtime.close()
