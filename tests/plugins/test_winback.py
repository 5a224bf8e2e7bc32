"""Win-back: due after N months without a visit (per tier), once per lapse, narrowed in SQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from sqlalchemy import select

from careflow.customers.dates import months_before
from careflow.planning.plan import plan
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import CareEvent, Customer
from careflow.testing import add_customer, add_visit, loaded_customers, parse_instant
from tests.plugins.helpers import events, recipients, runtime_with


@pytest.fixture
def runtime(careflow_db_url: str) -> Iterator[Runtime]:
    rt = runtime_with(careflow_db_url, {"winback": {"months": 9, "months_by_tier": {"A": 6}}})
    yield rt
    rt.close()


@pytest.fixture
def runtime_any_db(db_url: str) -> Iterator[Runtime]:
    """The same runtime on SQLite and on PostgreSQL, for tests whose SQL differs between them."""
    rt = runtime_with(db_url, {"winback": {"months": 9, "months_by_tier": {"A": 6}}})
    yield rt
    rt.close()


def _customer(rt: Runtime, ext: str, visits: list[tuple[date, int]], **kw: object) -> None:
    with rt.sessions.begin() as session:
        c = add_customer(session, external_id=ext, **kw)  # type: ignore[arg-type]
        for day, amount in visits:
            add_visit(session, c, day, amount=amount)


def test_month_end_visit_falls_due_on_the_first_of_the_month_after(runtime: Runtime) -> None:
    # May 31 + 9 months has no Feb 31: due on Mar 1, not Feb 28.
    _customer(runtime, "may31", [(date(2025, 5, 31), 300)])
    plan(runtime, now=parse_instant("2026-02-28T10:00:00+08:00"), day=date(2026, 2, 28))
    assert recipients(runtime, "winback") == []
    plan(runtime, now=parse_instant("2026-03-01T10:00:00+08:00"), day=date(2026, 3, 1))
    assert recipients(runtime, "winback") == ["may31"]


def test_leap_day(runtime: Runtime) -> None:
    _customer(runtime, "leap", [(date(2023, 5, 29), 300)])
    plan(runtime, now=parse_instant("2024-02-28T10:00:00+08:00"), day=date(2024, 2, 28))
    assert recipients(runtime, "winback") == []
    plan(runtime, now=parse_instant("2024-02-29T10:00:00+08:00"), day=date(2024, 2, 29))
    assert recipients(runtime, "winback") == ["leap"]


def test_due_by_the_customers_own_local_day(runtime: Runtime) -> None:
    # 2026-02-28 20:00 UTC is already Mar 1 in Auckland but still Feb 28 in Los Angeles.
    _customer(runtime, "auckland", [(date(2025, 6, 1), 300)], timezone="Pacific/Auckland")
    _customer(runtime, "los-angeles", [(date(2025, 6, 1), 300)], timezone="America/Los_Angeles")
    plan(runtime, now=parse_instant("2026-02-28T20:00:00+00:00"))
    assert recipients(runtime, "winback") == ["auckland"]


def test_once_per_lapse_and_a_new_visit_starts_a_new_lapse(runtime_any_db: Runtime) -> None:
    runtime = runtime_any_db
    _customer(runtime, "away", [(date(2025, 1, 10), 300)])
    first = plan(runtime, now=parse_instant("2025-11-01T10:00:00+08:00"), day=date(2025, 11, 1))
    again = plan(runtime, now=parse_instant("2025-11-02T10:00:00+08:00"), day=date(2025, 11, 2))
    assert first.new == 1 and again.new == 0 and again.already_recorded == 0  # not even loaded again
    with runtime.sessions.begin() as session:
        c = session.scalars(select(Customer).where(Customer.external_id == "away")).one()
        add_visit(session, c, date(2025, 12, 1))
    plan(runtime, now=parse_instant("2026-06-01T10:00:00+08:00"), day=date(2026, 6, 1))
    assert len(events(runtime, "winback")) == 1  # back in December: not lapsed yet in June
    plan(runtime, now=parse_instant("2026-09-01T10:00:00+08:00"), day=date(2026, 9, 1))
    periods = [e.period for e in events(runtime, "winback")]
    assert periods == ["2025-01-10", "2025-12-01"]


def test_top_tier_is_written_to_sooner(runtime_any_db: Runtime) -> None:
    runtime = runtime_any_db
    # Four visits and 6000 spent in the last 12 months: tier A (6 months); the same last visit
    # with one small visit is tier C (9 months).
    visits = [(date(2026, 1, 10), 1500), (date(2026, 2, 10), 1500), (date(2026, 3, 10), 1500)]
    _customer(runtime, "top", [*visits, (date(2026, 5, 1), 1500)])
    _customer(runtime, "casual", [(date(2026, 5, 1), 200)])
    plan(runtime, now=parse_instant("2026-11-02T10:00:00+08:00"), day=date(2026, 11, 2))
    assert recipients(runtime, "winback") == ["top"]
    with runtime.sessions() as session:
        event = session.query(CareEvent).one()
        assert event.context == {"last_visit": "2026-05-01", "months": 6}


def test_recent_and_already_written_customers_are_never_loaded(runtime: Runtime) -> None:
    _customer(runtime, "lapsed", [(date(2025, 1, 1), 300)])
    for i in range(5):
        _customer(runtime, f"recent{i}", [(date(2026, 10, 1), 300)])
    _customer(runtime, "never-visited", [])
    with loaded_customers() as seen:
        plan(runtime, now=parse_instant("2026-11-02T10:00:00+08:00"), day=date(2026, 11, 2))
    assert seen == ["lapsed"]
    with loaded_customers() as seen:
        plan(runtime, now=parse_instant("2026-11-03T10:00:00+08:00"), day=date(2026, 11, 3))
    assert seen == []


def test_months_before_clamps_to_month_end() -> None:
    assert months_before(date(2026, 5, 31), 3) == date(2026, 2, 28)
    assert months_before(date(2024, 5, 31), 3) == date(2024, 2, 29)
    assert months_before(date(2026, 1, 15), 13) == date(2024, 12, 15)


@pytest.mark.parametrize(
    ("locale", "expected"), [("en", "we have not seen you since May 2025"), ("zh_CN", "自2025年5月以来")]
)
def test_template_renders_in_both_locales(careflow_db_url: str, locale: str, expected: str) -> None:
    rt = runtime_with(careflow_db_url, {"winback": {}})
    try:
        _customer(rt, "w", [(date(2025, 5, 3), 300)], locale=locale, name="Lee")
        run_day(rt, now=parse_instant("2026-03-01T10:00:00+08:00"))
        (event,) = events(rt, "winback")
        assert event.status == "sent", event.status_reason
        assert expected in (event.body or "")
        assert "Lee" in (event.body or "")
    finally:
        rt.close()


def test_recent_lapses_are_found_by_visit_date_every_day_and_older_ones_on_the_full_scan_day(
    runtime_any_db: Runtime,
) -> None:
    runtime = runtime_any_db
    # Tuesday 2026-11-03; the full scan is on Mondays (the default).
    _customer(runtime, "recent", [(date(2026, 1, 20), 300)])  # lapsed 9 months on 2026-10-20
    _customer(runtime, "old", [(date(2024, 12, 1), 300)])  # lapsed long ago, never written to
    _customer(runtime, "back", [(date(2026, 1, 25), 300), (date(2026, 9, 1), 300)])  # came back
    _customer(runtime, "never-visited", [])
    with loaded_customers() as seen:
        plan(runtime, now=parse_instant("2026-11-03T10:00:00+08:00"), day=date(2026, 11, 3))
    assert seen == ["recent"] and recipients(runtime, "winback") == ["recent"]
    plan(runtime, now=parse_instant("2026-11-09T10:00:00+08:00"), day=date(2026, 11, 9))  # Monday
    assert sorted(recipients(runtime, "winback")) == ["old", "recent"]  # each once
    assert len(events(runtime, "winback")) == 2


def test_without_a_full_scan_day_only_lapses_within_the_catch_up_are_written(careflow_db_url: str) -> None:
    rt = runtime_with(careflow_db_url, {"winback": {"catch_up_days": 10, "full_scan_weekday": "never"}})
    try:
        _customer(rt, "nine-days", [(date(2026, 1, 25), 300)])  # lapsed 2026-10-25
        _customer(rt, "twelve-days", [(date(2026, 1, 22), 300)])  # lapsed 2026-10-22
        plan(rt, now=parse_instant("2026-11-03T10:00:00+08:00"), day=date(2026, 11, 3))
        plan(rt, now=parse_instant("2026-11-09T10:00:00+08:00"), day=date(2026, 11, 9))  # a Monday
        assert recipients(rt, "winback") == ["nine-days"]
    finally:
        rt.close()
