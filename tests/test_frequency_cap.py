"""Frequency cap: at most N care messages per customer per rolling window, by plugin priority."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from careflow.planning.plan import plan
from careflow.service.care_run import run_day
from careflow.storage.models import CareEvent, EventStatus
from careflow.testing import add_customer, parse_instant
from careflow.testing.twilio_server import FakeTwilio
from tests.care_plugins_for_tests import EveryoneToday, ExtraCarePlugins
from tests.policy_support import events, twilio_runtime

NOW = parse_instant("2026-05-11T10:00:00+08:00")
ENABLED = {name: {"enabled": True} for name in ("warranty", "loyalty", "holiday")}


def runtime_with_three_plugins(  # type: ignore[no-untyped-def]
    tmp_path: Path, fake_twilio: FakeTwilio, db_url: str | None = None, **center: object
):
    plugins = ExtraCarePlugins(
        tmp_path / "tpl",
        EveryoneToday("holiday", 10),
        EveryoneToday("warranty", 90),
        EveryoneToday("loyalty", 50),
    )
    url = db_url or f"sqlite:///{tmp_path / 'c.db'}"
    return twilio_runtime(url, fake_twilio, extra_plugins=[plugins], plugins=ENABLED, center=center)


def test_higher_priority_wins_and_the_rest_are_suppressed_with_a_reason(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    runtime = runtime_with_three_plugins(tmp_path, fake_twilio)
    try:
        with runtime.sessions.begin() as session:
            add_customer(session, external_id="A", phone="+8613800000001", locale="zh_CN")
        report = run_day(runtime, now=NOW).report
        assert report.new == 3 and report.suppressed == 1
        by_plugin = {e.plugin: e for e in events(runtime)}
        assert by_plugin["warranty"].status == EventStatus.SENT
        assert by_plugin["loyalty"].status == EventStatus.SENT
        holiday = by_plugin["holiday"]
        assert holiday.status == EventStatus.SUPPRESSED
        assert holiday.status_reason == (
            "frequency cap: at most 2 care message(s) per 7 days; 0 already recorded in the window; "
            "gave way to warranty (priority 90), loyalty (priority 50) (this: holiday, priority 10)"
        )
        assert len(fake_twilio.messages) == 2
        # Re-running the day does not re-decide or send anything.
        again = run_day(runtime, now=parse_instant("2026-05-11T15:00:00+08:00")).report
        assert again.new == 0 and len(fake_twilio.messages) == 2
    finally:
        runtime.close()


def test_messages_already_in_the_window_count(tmp_path: Path, db_url: str, fake_twilio: FakeTwilio) -> None:
    runtime = runtime_with_three_plugins(
        tmp_path, fake_twilio, db_url, frequency_cap=2, frequency_window_days=7
    )
    try:
        with runtime.sessions.begin() as session:
            customer = add_customer(session, external_id="A", phone="+8613800000001", locale="zh_CN")
            for key, day, status in (
                ("old", date(2026, 5, 4), EventStatus.SENT),  # 7 days ago: outside the window
                ("recent", date(2026, 5, 8), EventStatus.DELIVERED),  # inside: counts
                ("bounced", date(2026, 5, 9), EventStatus.FAILED),  # never reached the customer
            ):
                session.add(
                    CareEvent(
                        idempotency_key=f"manual:{key}",
                        center_id=customer.center_id,
                        customer_id=customer.id,
                        plugin="manual",
                        occasion=key,
                        period=key,
                        purpose="service",
                        due_date=day,
                        template="notice",
                        locale="zh_CN",
                        context={},
                        status=status,
                    )
                )
        plan(runtime, now=NOW)
        today = {e.plugin: e for e in events(runtime) if e.plugin != "manual"}
        assert today["warranty"].status == EventStatus.PLANNED
        assert today["loyalty"].status == EventStatus.SUPPRESSED
        assert today["holiday"].status == EventStatus.SUPPRESSED
        assert "1 already recorded in the window" in (today["loyalty"].status_reason or "")
    finally:
        runtime.close()


def test_cap_zero_means_no_cap(tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    runtime = runtime_with_three_plugins(tmp_path, fake_twilio, frequency_cap=0)
    try:
        with runtime.sessions.begin() as session:
            add_customer(session, external_id="A", phone="+8613800000001", locale="zh_CN")
        plan(runtime, now=NOW)
        assert {e.status for e in events(runtime)} == {EventStatus.PLANNED}
    finally:
        runtime.close()
