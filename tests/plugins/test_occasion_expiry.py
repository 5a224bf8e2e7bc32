"""Time-bound occasions carry an expiry: one that would wait past it is ``expired``, never sent.

Issue 13, item 8: a weather warning deferred overnight went out the next morning, after the
weather was over. Each case goes through the real run path (``run_day``: plan, release, send).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import CareEvent, PointsEntry, Voucher
from careflow.testing import add_customer, parse_instant
from tests.plugins.helpers import events, runtime_with

# Sending 09:00-20:00 local (Asia/Shanghai), no frequency cap: only quiet hours and expiry decide.
CENTERS = {"main": {"send_from": "09:00", "send_until": "20:00", "frequency_cap": 0}}
EVENING = parse_instant("2026-07-20T21:00:00+08:00")  # the window closed an hour ago
NEXT_MORNING = parse_instant("2026-07-21T09:30:00+08:00")


def _alerts(tmp_path: Path, ends: str) -> Path:
    path = tmp_path / "alerts.csv"
    path.write_text(
        f"id,city,kind,starts,ends,headline\nSH-TY-1,Shanghai,typhoon,2026-07-20,{ends},台风橙色预警\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def weather(tmp_path: Path) -> Iterator[Runtime]:
    path = _alerts(tmp_path, "2026-07-20")
    rt = runtime_with(
        f"sqlite:///{tmp_path / 'c.db'}",
        {"weather": {"provider": "file", "alerts_file": str(path)}},
        centers=CENTERS,
    )
    with rt.sessions.begin() as session:
        add_customer(session, external_id="sh", city="Shanghai", locale="zh_CN")
    yield rt
    rt.close()


def _only(rt: Runtime, plugin: str) -> CareEvent:
    (event,) = events(rt, plugin)
    return event


def test_an_alert_over_before_the_window_opens_is_expired_and_never_sent(weather: Runtime) -> None:
    rt = weather
    run_day(rt, now=EVENING)
    event = _only(rt, "weather")
    assert event.status == "expired"
    assert event.expires_at == parse_instant("2026-07-21T00:00:00+08:00")  # the end of its last day
    assert "the occasion expires at 2026-07-21T00:00:00+08:00, before the sending window opens" in (
        event.status_reason or ""
    )
    run_day(rt, now=NEXT_MORNING)  # the window opens: nothing goes out
    event = _only(rt, "weather")
    assert (event.status, event.body, event.sent_at) == ("expired", None, None)


def test_an_alert_still_deferred_when_it_ends_is_expired_at_release(weather: Runtime) -> None:
    rt = weather
    run_day(rt, now=parse_instant("2026-07-20T07:00:00+08:00"))  # deferred until 09:00 ...
    assert _only(rt, "weather").status == "deferred"
    run_day(rt, now=NEXT_MORNING)  # ... but nothing ran until the next morning, after the typhoon
    event = _only(rt, "weather")
    assert (event.status, event.body) == ("expired", None)
    assert "expired before its sending window opened" in (event.status_reason or "")


def test_an_alert_lasting_into_the_next_day_waits_for_the_window(tmp_path: Path, weather: Runtime) -> None:
    rt = weather
    _alerts(tmp_path, "2026-07-21")  # the typhoon lasts until tomorrow: the advice still helps
    run_day(rt, now=EVENING)
    assert _only(rt, "weather").status == "deferred"
    run_day(rt, now=NEXT_MORNING)
    event = _only(rt, "weather")
    assert event.status == "sent" and "台风" in (event.body or "")


def test_a_holiday_greeting_is_not_sent_the_day_after(tmp_path: Path) -> None:
    rt = runtime_with(f"sqlite:///{tmp_path / 'c.db'}", {"holidays": {}}, centers=CENTERS)
    try:
        with rt.sessions.begin() as session:
            add_customer(session, external_id="zh", locale="zh_CN")
        run_day(rt, now=parse_instant("2026-09-25T21:00:00+08:00"))  # Mid-Autumn, after the window
        run_day(rt, now=parse_instant("2026-09-26T09:30:00+08:00"))
        event = _only(rt, "holidays")
        assert (event.occasion, event.status, event.body) == ("mid_autumn", "expired", None)
        assert event.expires_at == parse_instant("2026-09-26T00:00:00+08:00")
    finally:
        rt.close()


def test_points_and_voucher_reminders_are_not_sent_once_they_lapsed(tmp_path: Path) -> None:
    rt = runtime_with(f"sqlite:///{tmp_path / 'c.db'}", {"points": {}}, centers=CENTERS)
    try:
        with rt.sessions.begin() as session:
            customer = add_customer(session, external_id="c1", locale="zh_CN")
            # A voucher valid through today, and points that lapse as tomorrow begins.
            session.add(
                Voucher(
                    code="V-LAST-DAY",
                    customer_id=customer.id,
                    kind="repair",
                    points=1000,
                    value=Decimal(100),
                    issued_on=date(2026, 1, 21),
                    expires_on=date(2026, 7, 20),
                )
            )
            session.add(
                PointsEntry(
                    customer_id=customer.id,
                    kind="earn",
                    points=80,
                    remaining=80,
                    entry_date=date(2024, 7, 21),
                    expires_on=date(2026, 7, 21),
                )
            )
        run_day(rt, now=EVENING)
        run_day(rt, now=NEXT_MORNING)
        found = {e.occasion: e for e in events(rt, "points")}
        assert {k: (e.status, e.body) for k, e in found.items()} == {
            "voucher-expiring": ("expired", None),
            "points-expiring": ("expired", None),
        }
        expiries: dict[str, datetime | None] = {k: e.expires_at for k, e in found.items()}
        assert expiries == {
            "voucher-expiring": parse_instant("2026-07-21T00:00:00+08:00"),
            "points-expiring": parse_instant("2026-07-21T00:00:00+08:00"),
        }
    finally:
        rt.close()
