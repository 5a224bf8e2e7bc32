"""Holidays: lunar and solar dates, per-center and per-locale choice, lunar birthdays, narrowing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from sqlalchemy import select

from careflow.customers.import_customers import CustomerImporter
from careflow.errors import ImportDataError
from careflow.planning.plan import plan
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import Customer
from careflow.testing import add_customer, center, loaded_customers, parse_instant
from careflow_plugins.holidays import HOLIDAY_DATES, holidays_on
from careflow_plugins.lunar import lunar_birthdays_on, lunar_to_solar
from tests.plugins.helpers import events, recipients, runtime_with


@pytest.mark.parametrize(
    ("holiday", "year", "expected"),
    [
        ("spring_festival", 2026, date(2026, 2, 17)),
        ("spring_festival", 2027, date(2027, 2, 6)),
        ("lantern", 2026, date(2026, 3, 3)),
        ("lantern", 2027, date(2027, 2, 20)),
        ("mid_autumn", 2026, date(2026, 9, 25)),
        ("mid_autumn", 2027, date(2027, 9, 15)),
        ("national_day", 2026, date(2026, 10, 1)),
        ("new_year", 2027, date(2027, 1, 1)),
        ("christmas", 2026, date(2026, 12, 25)),
    ],
)
def test_holiday_dates(holiday: str, year: int, expected: date) -> None:
    assert HOLIDAY_DATES[holiday](year) == expected
    assert holiday in holidays_on(expected)


def test_an_ordinary_day_has_no_holiday() -> None:
    assert holidays_on(date(2026, 2, 16)) == []  # lunar new year's eve


def test_lunar_birthday_conventions() -> None:
    # Lunar 2025 has a leap 6th month (Jul 25 - Aug 22, 2025): nobody's birthday is greeted in it.
    assert lunar_birthdays_on(date(2025, 7, 25)) == (2025, set())
    # The regular 6th month of 2025 starts Jun 25, 2025.
    assert lunar_birthdays_on(date(2025, 6, 25)) == (2025, {(6, 1)})
    # The 30th is greeted on the 29th when the month is short: the 12th month of lunar 2025 has 29 days.
    assert lunar_birthdays_on(date(2026, 2, 16)) == (2025, {(12, 29), (12, 30)})
    assert lunar_to_solar(2025, 12, 30) == date(2026, 2, 16)


@pytest.fixture
def runtime(careflow_db_url: str) -> Iterator[Runtime]:
    rt = runtime_with(careflow_db_url, {"holidays": {}, "birthday": {}})
    yield rt
    rt.close()


@pytest.fixture
def runtime_any_db(db_url: str) -> Iterator[Runtime]:
    """The same runtime on SQLite and on PostgreSQL, for tests whose SQL differs between them."""
    rt = runtime_with(db_url, {"holidays": {}, "birthday": {}})
    yield rt
    rt.close()


def _add(rt: Runtime, ext: str, **kw: Any) -> None:
    with rt.sessions.begin() as session:
        add_customer(session, external_id=ext, **kw)


def test_christmas_only_for_english_customers_by_default(runtime_any_db: Runtime) -> None:
    runtime = runtime_any_db
    _add(runtime, "en", locale="en")
    _add(runtime, "en-gb", locale="en_GB")
    _add(runtime, "zh", locale="zh_CN")
    _add(runtime, "center-locale", locale=None)  # the center's locale is zh_CN
    with loaded_customers() as seen:
        plan(runtime, now=parse_instant("2026-12-25T10:00:00+08:00"))
    assert sorted(seen) == ["en", "en-gb"]  # narrowed in SQL: the others are never loaded
    assert sorted(recipients(runtime, "holidays")) == ["en", "en-gb"]


def test_spring_festival_for_everyone_once(runtime: Runtime) -> None:
    _add(runtime, "zh", locale="zh_CN")
    _add(runtime, "en", locale="en")
    first = plan(runtime, now=parse_instant("2026-02-17T09:00:00+08:00"))
    again = plan(runtime, now=parse_instant("2026-02-17T18:00:00+08:00"))
    assert first.new == 2 and again.new == 0 and again.already_recorded == 2
    assert {e.occasion for e in events(runtime, "holidays")} == {"spring_festival"}


def test_no_customer_is_loaded_on_an_ordinary_day(runtime: Runtime) -> None:
    for i in range(5):
        _add(runtime, f"c{i}")
    with loaded_customers() as seen:
        report = plan(runtime, now=parse_instant("2026-02-16T09:00:00+08:00"))
    assert seen == [] and report.occasions == 0


def test_holiday_in_the_customers_time_zone(runtime: Runtime) -> None:
    # 2026-12-31 12:00 UTC: already New Year's Day in Auckland, not yet in London.
    _add(runtime, "auckland", timezone="Pacific/Auckland")
    _add(runtime, "london", timezone="Europe/London")
    plan(runtime, now=parse_instant("2026-12-31T12:00:00+00:00"))
    assert recipients(runtime, "holidays") == ["auckland"]


def test_per_center_choice(careflow_db_url: str) -> None:
    rt = runtime_with(
        careflow_db_url,
        {"holidays": {"centers": {"north": ["spring_festival"], "south": ["national_day"]}}},
        centers={"north": {"name": "North"}, "south": {"name": "South"}},
    )
    try:
        _add(rt, "n", center_code="north")
        _add(rt, "s", center_code="south")
        plan(rt, now=parse_instant("2026-10-01T09:00:00+08:00"))
        assert recipients(rt, "holidays") == ["s"]
    finally:
        rt.close()


@pytest.mark.parametrize(
    ("locale", "expected"),
    [("zh_CN", "中秋节快乐"), ("en", "Happy Mid-Autumn Festival")],
)
def test_templates_render_in_both_locales(careflow_db_url: str, locale: str, expected: str) -> None:
    rt = runtime_with(careflow_db_url, {"holidays": {}})
    try:
        _add(rt, "m", locale=locale)
        run_day(rt, now=parse_instant("2026-09-25T10:00:00+08:00"))
        (event,) = events(rt, "holidays")
        assert event.status == "sent", event.status_reason
        assert expected in (event.body or "")
    finally:
        rt.close()


@pytest.fixture
def birthday_only(db_url: str) -> Iterator[Runtime]:
    rt = runtime_with(db_url, {"birthday": {}})
    yield rt
    rt.close()


def test_lunar_birthday_greeted_on_its_solar_date(birthday_only: Runtime) -> None:
    runtime = birthday_only
    # Lunar 8/15 is Sep 25 in 2026 and Sep 15 in 2027; a solar Aug 15 birthday is not touched.
    with runtime.sessions.begin() as session:
        lunar = add_customer(session, external_id="lunar", birthday=(1980, 8, 15))
        lunar.birthday_calendar = "lunar"
        add_customer(session, external_id="solar", birthday=(1980, 9, 25))
        add_customer(session, external_id="solar-aug", birthday=(1980, 8, 15))
    with loaded_customers() as seen:
        plan(runtime, now=parse_instant("2026-09-25T09:00:00+08:00"), day=date(2026, 9, 25))
    assert sorted(seen) == ["lunar", "solar"]
    plan(runtime, now=parse_instant("2027-09-15T09:00:00+08:00"), day=date(2027, 9, 15))
    plan(runtime, now=parse_instant("2026-08-15T09:00:00+08:00"), day=date(2026, 8, 15))
    got = [(e.customer.external_id, e.period, e.context["age"]) for e in _with_customers(runtime, "birthday")]
    assert sorted(got) == [
        ("lunar", "lunar2026", 46),
        ("lunar", "lunar2027", 47),
        ("solar", "2026", 46),
        ("solar-aug", "2026", 46),
    ]


def _with_customers(rt: Runtime, plugin: str) -> list[Any]:
    with rt.sessions() as session:
        found = events(rt, plugin)
        for e in found:
            e.customer = session.get(Customer, e.customer_id)  # type: ignore[assignment]
        return found


def test_lunar_30th_in_a_short_month(runtime: Runtime) -> None:
    with runtime.sessions.begin() as session:
        c = add_customer(session, external_id="thirtieth", birthday=(None, 12, 30))
        c.birthday_calendar = "lunar"
    plan(runtime, now=parse_instant("2026-02-16T09:00:00+08:00"), day=date(2026, 2, 16))
    assert recipients(runtime, "birthday") == ["thirtieth"]


def test_import_lunar_birthdays(runtime: Runtime) -> None:
    good = "external_id,name,birthday,birthday_calendar\nL1,王伟,1980-02-30,lunar\nS1,李娜,1980-02-28,solar\n"
    with runtime.sessions.begin() as session:
        CustomerImporter(session, center(session)).run_text(good)
    with runtime.sessions() as session:
        cards = {c.external_id: c for c in session.scalars(select(Customer))}
        assert (cards["L1"].birth_month, cards["L1"].birth_day, cards["L1"].birthday_calendar) == (
            2,
            30,
            "lunar",
        )
        assert cards["S1"].birthday_calendar is None
    bad = "external_id,name,birthday,birthday_calendar\nL2,王伟,1980-13-01,lunar\nL3,王伟,02-10,chinese\n"
    with runtime.sessions.begin() as session, pytest.raises(ImportDataError) as caught:
        CustomerImporter(session, center(session)).run_text(bad)
    problems = "\n".join(caught.value.problems)
    assert "row 2, column birthday: value '1980-13-01': not a lunar date" in problems
    assert "row 3, column birthday_calendar: value 'chinese': expected solar or lunar" in problems
