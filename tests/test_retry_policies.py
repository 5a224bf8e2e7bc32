"""Retries and late sends keep the timing policies: quiet hours, the frequency cap and expiry.

`careflow retry`, the console's Retry and any delivery that reaches a worker late (a backlog
behind a slow sender, a re-queued message) decide exactly as planning would, and record why.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from careflow.cli import main
from careflow.delivery.batch import deliver_many
from careflow.delivery.results import Outcome
from careflow.planning.plan import plan
from careflow.policies.quiet_hours import release_deferred
from careflow.runtime import Runtime
from careflow.service.care_run import retry_events
from careflow.storage.models import CareEvent, EventStatus, utcnow
from careflow.testing import add_customer, parse_instant
from careflow.testing.twilio_server import FakeTwilio, Fault
from tests.care_plugins_for_tests import EveryoneToday, ExtraCarePlugins
from tests.policy_support import SENDER, events, twilio_runtime

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = parse_instant("2026-05-11T10:00:00+08:00")  # inside the default 09:00-20:00 window


def closed_now() -> tuple[str, str, datetime]:
    """A one-hour sending window that opens two hours after the real clock's hour, and an instant in it.

    `careflow retry` runs on the real clock, so the window is placed away from it: the real
    time is outside it whenever the test runs.
    """
    local = utcnow().astimezone(SHANGHAI)
    start = (local + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    end = start + timedelta(hours=1)
    return start.strftime("%H:%M"), end.strftime("%H:%M"), start + timedelta(minutes=30)


@pytest.fixture
def failed_in_a_window(tmp_path: Path, fake_twilio: FakeTwilio) -> Iterator[tuple[Runtime, int, Path]]:
    """A birthday greeting that failed inside the window (bad routing); the real clock is outside it."""
    send_from, send_until, inside = closed_now()
    runtime = twilio_runtime(
        f"sqlite:///{tmp_path / 'c.db'}",
        fake_twilio,
        center={"send_from": send_from, "send_until": send_until},
    )
    day = inside.astimezone(SHANGHAI).date()
    with runtime.sessions.begin() as session:
        add_customer(session, external_id="C1", phone="+8613800138001", birthday=(1990, day.month, day.day))
    fake_twilio.fail_recipient("+8613800138001", Fault(status=400, code=21612))
    plan(runtime, now=inside)
    (event,) = events(runtime)
    deliver_many(runtime, [event.id], now=inside)
    assert events(runtime)[0].status == EventStatus.FAILED
    fake_twilio.reset()  # the operator fixed the routing
    config = tmp_path / "careflow.toml"
    config.write_text(
        f"""
[database]
url = "sqlite:///{tmp_path / "c.db"}"
[channels.sms]
provider = "twilio"
[twilio]
account_sid = "{fake_twilio.account_sid}"
from_number = "{SENDER}"
base_url = "{fake_twilio.url}"
messages_per_second = 0
[centers.main]
name = "Anxin Auto"
timezone = "Asia/Shanghai"
locale = "zh_CN"
send_from = "{send_from}"
send_until = "{send_until}"
[plugins.birthday]
enabled = true
""",
        encoding="utf-8",
    )
    yield runtime, event.id, config
    runtime.close()


def test_careflow_retry_in_quiet_hours_defers_to_the_window_and_sends_nothing(
    failed_in_a_window: tuple[Runtime, int, Path], fake_twilio: FakeTwilio
) -> None:
    runtime, event_id, config = failed_in_a_window
    env = {"CAREFLOW_CONFIG": str(config), "CAREFLOW_TWILIO__AUTH_TOKEN": fake_twilio.auth_token}
    result = CliRunner().invoke(main, ["retry", str(event_id)], env=env, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "retried 1 event(s): 1 deferred to the sending window" in result.output
    assert fake_twilio.messages == []
    (event,) = events(runtime)
    assert event.status == EventStatus.DEFERRED and event.attempts == 0
    assert event.not_before is not None and event.not_before > utcnow()
    assert "retried by an operator; quiet hours" in (event.status_reason or "")
    # When the window opens, it is released and sent like any deferred event.
    assert release_deferred(runtime, event.not_before) == [event_id]
    deliver_many(runtime, [event_id], now=event.not_before)
    assert [m.to for m in fake_twilio.messages] == ["+8613800138001"]


def test_a_retry_over_the_frequency_cap_is_suppressed_with_the_reason(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    runtime = twilio_runtime(
        f"sqlite:///{tmp_path / 'c.db'}", fake_twilio, center={"frequency_cap": 1, "frequency_window_days": 7}
    )
    with runtime.sessions.begin() as session:
        customer = add_customer(session, external_id="C1", phone="+8613800138001")

        def event(key: str, status: EventStatus, due: int) -> CareEvent:
            return CareEvent(
                idempotency_key=f"{key}:{customer.id}",
                center_id=customer.center_id,
                customer_id=customer.id,
                plugin=key,
                occasion=key,
                period="2026",
                purpose="marketing",
                priority=10,
                due_date=NOW.date() - timedelta(days=due),
                channel="sms",
                recipient=customer.phone,
                template="birthday",
                locale="zh_CN",
                context={},
                status=status,
            )

        failed = event("birthday", EventStatus.FAILED, 3)
        session.add_all([failed, event("holidays", EventStatus.SENT, 1)])
    retried = retry_events(runtime, [failed.id], now=NOW)
    assert retried.suppressed == [failed.id] and retried.planned == []
    stored = next(e for e in events(runtime) if e.id == failed.id)
    assert stored.status == EventStatus.SUPPRESSED
    assert "frequency cap: at most 1 care message(s) per 7 days; 1 already recorded" in (
        stored.status_reason or ""
    )


def test_a_late_send_outside_the_window_is_deferred_without_using_an_attempt(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    runtime = twilio_runtime(f"sqlite:///{tmp_path / 'c.db'}", fake_twilio)
    with runtime.sessions.begin() as session:
        add_customer(session, external_id="C1", phone="+8613800138001", birthday=(1990, 5, 11))
    plan(runtime, now=NOW)
    (event,) = events(runtime)
    # A backlog (or a re-queued message) reaches a worker at 21:30, after send_until.
    late = parse_instant("2026-05-11T21:30:00+08:00")
    result = deliver_many(runtime, [event.id], now=late)
    assert result.outcomes[event.id] is Outcome.DEFERRED
    assert fake_twilio.messages == []
    (stored,) = events(runtime)
    assert stored.status == EventStatus.DEFERRED and stored.attempts == 0
    assert stored.not_before == datetime(2026, 5, 12, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
    assert release_deferred(runtime, stored.not_before) == [event.id]
    deliver_many(runtime, [event.id], now=stored.not_before)
    assert [m.to for m in fake_twilio.messages] == ["+8613800138001"]


def test_an_occasion_that_expired_while_queued_is_recorded_expired_and_never_sent(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    extra = ExtraCarePlugins(tmp_path / "tpl", EveryoneToday("storm", 90, valid_for=timedelta(hours=1)))
    runtime = twilio_runtime(
        f"sqlite:///{tmp_path / 'c.db'}",
        fake_twilio,
        extra_plugins=[extra],
        plugins={"storm": {"enabled": True}},
    )
    with runtime.sessions.begin() as session:
        add_customer(session, external_id="C1", phone="+8613800138001")
    plan(runtime, now=NOW)
    (event,) = events(runtime)
    result = deliver_many(runtime, [event.id], now=NOW + timedelta(hours=2))
    assert result.outcomes[event.id] is Outcome.EXPIRED
    assert fake_twilio.messages == []
    (stored,) = events(runtime)
    assert stored.status == EventStatus.EXPIRED
    assert "expired at 2026-05-11T03:00:00+00:00, before it could be sent" in (stored.status_reason or "")
    with runtime.sessions() as session:
        assert session.scalar(select(CareEvent.attempts)) == 0


def test_a_batch_still_sending_when_the_window_closes_defers_the_rest(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    """Quiet hours are checked at each send, after the rate-limit wait, not once per batch."""
    runtime = twilio_runtime(f"sqlite:///{tmp_path / 'c.db'}", fake_twilio)
    runtime.settings.twilio.messages_per_second = 0.5  # a slot every 2 s, as on a slow sender
    with runtime.sessions.begin() as session:
        for i in range(2):
            add_customer(session, external_id=f"C{i}", phone=f"+861380013800{i}", birthday=(1990, 5, 11))
    plan(runtime, now=NOW)
    ids = [e.id for e in events(runtime)]
    # The batch starts a second before send_until (20:00 in Shanghai); the second slot is after it.
    result = deliver_many(runtime, ids, now=parse_instant("2026-05-11T19:59:59+08:00"))
    assert [m.to for m in fake_twilio.messages] == ["+8613800138000"]
    assert result.outcomes[ids[1]] is Outcome.DEFERRED
    late = events(runtime)[1]
    assert late.status == EventStatus.DEFERRED and late.attempts == 0
    assert late.not_before == datetime(2026, 5, 12, 1, 0, tzinfo=UTC)
