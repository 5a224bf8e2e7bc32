"""The birthday plugin: once a year, on the customer's own local birthday, or a recorded reason why not."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select

from careflow.care import PlanContext
from careflow.hookspecs import hookimpl
from careflow.planning.plan import PlanReport, plan
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import CareEvent, Center, Customer, EventStatus
from careflow.testing import add_customer, build_runtime, make_settings, parse_instant
from careflow_plugins.birthday import BirthdayPlugin

# These tests are about when a birthday is due, not about quiet hours: send around the clock.
ALWAYS = {"send_from": "00:00", "send_until": "24:00"}
CENTERS = {
    "sh": {"name": "浦东汽车服务中心", "timezone": "Asia/Shanghai", "locale": "zh_CN", **ALWAYS},
    "la": {"name": "Sunset Motors", "timezone": "America/Los_Angeles", "locale": "en", **ALWAYS},
}

# 23:30 UTC on May 10: already May 11 in Shanghai, still May 10 in Los Angeles.
LATE_MAY_10_UTC = "2026-05-10T23:30:00+00:00"


class DeliveryLog:
    """Records every event the provider accepted."""

    def __init__(self) -> None:
        self.event_ids: list[int] = []

    @hookimpl
    def careflow_event_delivered(self, event: CareEvent) -> None:
        self.event_ids.append(event.id)


@pytest.fixture
def deliveries() -> DeliveryLog:
    return DeliveryLog()


@pytest.fixture
def runtime(careflow_db_url: str, deliveries: DeliveryLog) -> Iterator[Runtime]:
    """SQLite, the local broker, the console channel, the birthday plugin enabled, two centers."""
    settings = make_settings(careflow_db_url, plugins={"birthday": {"enabled": True}}, centers=CENTERS)
    rt = build_runtime(settings, extra_plugins=[deliveries])
    yield rt
    rt.close()


def add(runtime: Runtime, external_id: str, **kwargs: Any) -> int:
    kwargs.setdefault("center_code", "sh")
    with runtime.sessions.begin() as session:
        return add_customer(session, external_id=external_id, **kwargs).id


def plan_at(runtime: Runtime, now: str, day: date | None = None) -> PlanReport:
    return plan(runtime, now=parse_instant(now), day=day)


def events(runtime: Runtime) -> dict[str, list[CareEvent]]:
    """Every recorded care event, by customer external id, oldest first."""
    found: dict[str, list[CareEvent]] = {}
    with runtime.sessions() as session:
        rows = session.execute(
            select(Customer.external_id, CareEvent)
            .join(Customer, CareEvent.customer_id == Customer.id)
            .order_by(CareEvent.id)
        ).all()
    for external_id, care_event in rows:
        found.setdefault(external_id, []).append(care_event)
    return found


def only_event(runtime: Runtime, external_id: str) -> CareEvent:
    recorded = events(runtime).get(external_id, [])
    assert len(recorded) == 1, f"{external_id}: {len(recorded)} events"
    return recorded[0]


def greeted(report: PlanReport, *customer_ids: int) -> set[int]:
    """Which of ``customer_ids`` this planning pass found a birthday occasion for."""
    return {cid for cid in customer_ids if any(k.endswith(f":{cid}") for k in report.keys)}


# --- which day ------------------------------------------------------------------------------


def test_feb_29_birthday_is_greeted_on_feb_28_in_a_common_year(runtime: Runtime) -> None:
    leapling = add(runtime, "leap", birthday=(2000, 2, 29))
    feb28 = add(runtime, "feb28", birthday=(2000, 2, 28))

    # 10:00 in Shanghai each day of 2027, a common year.
    assert greeted(plan_at(runtime, "2027-02-27T02:00:00+00:00"), leapling, feb28) == set()
    assert greeted(plan_at(runtime, "2027-03-01T02:00:00+00:00"), leapling, feb28) == set()
    assert greeted(plan_at(runtime, "2027-02-28T02:00:00+00:00"), leapling, feb28) == {leapling, feb28}

    event_ = only_event(runtime, "leap")
    assert event_.due_date == date(2027, 2, 28)
    assert event_.period == "2027"
    assert event_.idempotency_key == f"birthday:birthday:2027:{leapling}"
    assert event_.context["age"] == 27


def test_feb_29_birthday_is_greeted_on_feb_29_only_in_a_leap_year(runtime: Runtime) -> None:
    leapling = add(runtime, "leap", birthday=(2000, 2, 29))
    feb28 = add(runtime, "feb28", birthday=(2000, 2, 28))

    on_28 = plan_at(runtime, "2028-02-28T02:00:00+00:00")
    on_29 = plan_at(runtime, "2028-02-29T02:00:00+00:00")
    on_mar_1 = plan_at(runtime, "2028-03-01T02:00:00+00:00")

    assert greeted(on_28, leapling, feb28) == {feb28}
    assert greeted(on_29, leapling, feb28) == {leapling}
    assert greeted(on_mar_1, leapling, feb28) == set()
    event_ = only_event(runtime, "leap")  # never twice
    assert event_.due_date == date(2028, 2, 29)
    assert event_.context["age"] == 28


def test_feb_29_birthday_is_not_greeted_early_when_feb_28_ends_elsewhere(runtime: Runtime) -> None:
    """At 20:00 UTC on Feb 28, 2027 it is already Mar 1 in Shanghai: too late for the greeting there."""
    in_shanghai = add(runtime, "sh", birthday=(2000, 2, 29), timezone="Asia/Shanghai")
    in_la = add(runtime, "la", birthday=(2000, 2, 29), timezone="America/Los_Angeles")

    report = plan_at(runtime, "2027-02-28T20:00:00+00:00")

    assert greeted(report, in_shanghai, in_la) == {in_la}
    assert only_event(runtime, "la").due_date == date(2027, 2, 28)


def test_customer_time_zone_decides_whether_the_birthday_has_started(runtime: Runtime) -> None:
    # The customers' own zones are the opposite of their centers', so the customer's must win.
    sh_11 = add(runtime, "sh-11", birthday=(1990, 5, 11), timezone="Asia/Shanghai", center_code="la")
    sh_10 = add(runtime, "sh-10", birthday=(1990, 5, 10), timezone="Asia/Shanghai", center_code="la")
    la_11 = add(runtime, "la-11", birthday=(1990, 5, 11), timezone="America/Los_Angeles", center_code="sh")
    la_10 = add(runtime, "la-10", birthday=(1990, 5, 10), timezone="America/Los_Angeles", center_code="sh")

    report = plan_at(runtime, LATE_MAY_10_UTC)

    assert greeted(report, sh_11, sh_10, la_11, la_10) == {sh_11, la_10}
    assert only_event(runtime, "sh-11").due_date == date(2026, 5, 11)
    assert only_event(runtime, "la-10").due_date == date(2026, 5, 10)

    # 01:00 on May 11 in Los Angeles: now it is la-11's turn.
    later = plan_at(runtime, "2026-05-11T08:00:00+00:00")
    assert greeted(later, sh_11, sh_10, la_11, la_10) == {sh_11, la_11}
    assert only_event(runtime, "la-11").due_date == date(2026, 5, 11)
    assert "sh-10" not in events(runtime)


def test_center_time_zone_is_used_when_the_customer_has_none(runtime: Runtime) -> None:
    at_sh = add(runtime, "at-sh", birthday=(1990, 5, 11), timezone=None, center_code="sh")
    at_la = add(runtime, "at-la", birthday=(1990, 5, 11), timezone=None, center_code="la")
    at_la_10 = add(runtime, "at-la-10", birthday=(1990, 5, 10), timezone=None, center_code="la")

    report = plan_at(runtime, LATE_MAY_10_UTC)

    assert greeted(report, at_sh, at_la, at_la_10) == {at_sh, at_la_10}
    assert only_event(runtime, "at-sh").due_date == date(2026, 5, 11)
    assert only_event(runtime, "at-la-10").due_date == date(2026, 5, 10)


def test_explicit_day_backfills_that_day_for_everyone(runtime: Runtime) -> None:
    sh = add(runtime, "sh", birthday=(1990, 5, 11), timezone="Asia/Shanghai")
    la = add(runtime, "la", birthday=(1980, 5, 11), timezone="America/Los_Angeles")
    other = add(runtime, "other", birthday=(1990, 6, 1))

    # Weeks later, and on June 1 (other's birthday) everywhere: only May 11 counts.
    report = plan_at(runtime, "2026-06-01T12:00:00+00:00", day=date(2026, 5, 11))

    assert greeted(report, sh, la, other) == {sh, la}
    for key, age in (("sh", 36), ("la", 46)):
        event_ = only_event(runtime, key)
        assert event_.due_date == date(2026, 5, 11)
        assert event_.period == "2026"
        assert event_.context["age"] == age


# --- once a year ----------------------------------------------------------------------------


def test_rerunning_the_day_sends_nothing_again_but_next_year_greets_again(
    runtime: Runtime, deliveries: DeliveryLog
) -> None:
    customer = add(runtime, "la", birthday=(1990, 5, 11), timezone="America/Los_Angeles")

    first = run_day(runtime, now=parse_instant("2026-05-11T08:00:00+00:00"))  # 01:00 local

    assert first.report.new == 1
    sent = only_event(runtime, "la")
    assert sent.status == EventStatus.SENT
    assert sent.idempotency_key == f"birthday:birthday:2026:{customer}"
    assert deliveries.event_ids == [sent.id]

    # The same instant again, then 23:00 local on the same day (already May 12 in UTC).
    for now in ("2026-05-11T08:00:00+00:00", "2026-05-12T06:00:00+00:00"):
        again = run_day(runtime, now=parse_instant(now))
        assert again.report.new == 0
        assert again.report.already_recorded == 1

    unchanged = only_event(runtime, "la")
    assert unchanged.status == EventStatus.SENT
    assert unchanged.attempts == 1
    assert unchanged.provider_message_id == sent.provider_message_id
    assert deliveries.event_ids == [sent.id]

    next_year = run_day(runtime, now=parse_instant("2027-05-11T08:00:00+00:00"))

    assert next_year.report.new == 1
    recorded = events(runtime)["la"]
    assert [e.idempotency_key for e in recorded] == [
        f"birthday:birthday:2026:{customer}",
        f"birthday:birthday:2027:{customer}",
    ]
    assert recorded[1].status == EventStatus.SENT
    assert recorded[1].context["age"] == 37
    assert deliveries.event_ids == [recorded[0].id, recorded[1].id]


# --- who cannot be greeted ------------------------------------------------------------------


def test_customer_without_sms_consent_is_suppressed_with_a_reason(
    runtime: Runtime, deliveries: DeliveryLog
) -> None:
    add(runtime, "no-consent", birthday=(1990, 5, 11), sms_consent=False)
    add(runtime, "ok", birthday=(1990, 5, 11))

    result = run_day(runtime, now=parse_instant(LATE_MAY_10_UTC))

    assert result.report.suppressed == 1
    suppressed = only_event(runtime, "no-consent")
    assert suppressed.status == EventStatus.SUPPRESSED
    assert suppressed.status_reason is not None and "sms: opted out of marketing" in suppressed.status_reason
    assert suppressed.channel is None
    assert suppressed.body is None
    assert deliveries.event_ids == [only_event(runtime, "ok").id]


def test_customer_without_phone_is_suppressed_with_a_reason(
    runtime: Runtime, deliveries: DeliveryLog
) -> None:
    add(runtime, "no-phone", birthday=(1990, 5, 11), phone=None)

    run_day(runtime, now=parse_instant(LATE_MAY_10_UTC))

    suppressed = only_event(runtime, "no-phone")
    assert suppressed.status == EventStatus.SUPPRESSED
    assert suppressed.status_reason is not None and "phone" in suppressed.status_reason
    assert suppressed.recipient is None
    assert suppressed.body is None
    assert deliveries.event_ids == []


def test_customer_without_birthday_is_never_greeted(runtime: Runtime) -> None:
    add(runtime, "unknown", birthday=None)

    report = plan_at(runtime, LATE_MAY_10_UTC, day=date(2026, 5, 11))

    assert report.occasions == 0
    assert events(runtime) == {}


# --- SQL narrowing --------------------------------------------------------------------------


def test_only_customers_with_a_birthday_today_are_loaded(runtime: Runtime) -> None:
    """1,000 customers, 3 of them due: the query itself filters on birth month and day."""
    with runtime.sessions.begin() as session:
        center_ids = dict(session.execute(select(Center.code, Center.id)).all())
        default_timezone = dict(session.execute(select(Center.id, Center.timezone)).all())
        due = [
            {"external_id": "due-sh", "birth_month": 5, "birth_day": 11, "timezone": "Asia/Shanghai"},
            {"external_id": "due-tokyo", "birth_month": 5, "birth_day": 11, "timezone": "Asia/Tokyo"},
            {"external_id": "due-la", "birth_month": 5, "birth_day": 10, "timezone": "America/Los_Angeles"},
        ]
        # Birthdays on every other day of the year: none may even be loaded.
        others = []
        for i in range(997):
            day = date.fromordinal(date(2026, 1, 1).toordinal() + (i * 7) % 365)
            if (day.month, day.day) in {(5, 10), (5, 11)}:
                day = date(2026, 8, 8)
            others.append({"external_id": f"other-{i}", "birth_month": day.month, "birth_day": day.day})
        rows = [
            {"center_id": center_ids["sh"], "name": r["external_id"], "timezone": None, **r}
            for r in due[:1] + others[:500] + due[1:] + others[500:]
        ]
        session.execute(insert(Customer), rows)
        lo, hi = session.execute(select(func.min(Customer.id), func.max(Customer.id))).one()

    statements: list[str] = []
    loaded: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def on_load(target: Customer, context: Any) -> None:
        loaded.append(target.external_id)

    plugin_settings = runtime.registry.enabled(runtime.settings)["birthday"][1]
    event.listen(runtime.engine, "before_cursor_execute", on_execute)
    event.listen(Customer, "load", on_load)
    try:
        with runtime.sessions() as session:
            ctx = PlanContext(
                session=session,
                now=parse_instant(LATE_MAY_10_UTC),
                day=None,
                id_range=(lo, hi),
                settings=plugin_settings,
                default_timezone=default_timezone,
            )
            occasions = list(BirthdayPlugin().occasions(ctx))
    finally:
        event.remove(Customer, "load", on_load)
        event.remove(runtime.engine, "before_cursor_execute", on_execute)

    assert {o.customer.external_id: o.due_date for o in occasions} == {
        "due-sh": date(2026, 5, 11),
        "due-tokyo": date(2026, 5, 11),
        "due-la": date(2026, 5, 10),
    }
    assert sorted(loaded) == ["due-la", "due-sh", "due-tokyo"]
    customer_queries = [s for s in statements if "FROM customers" in s]
    assert customer_queries, statements
    for statement in customer_queries:
        where = statement.split("WHERE", 1)[1]
        assert "birth_month" in where and "birth_day" in where


# --- the message ----------------------------------------------------------------------------


def test_greeting_text_in_chinese_and_english(runtime: Runtime) -> None:
    add(runtime, "zh", name="张伟", birthday=(1990, 5, 11), locale="zh_CN", center_code="sh")
    add(runtime, "en", name="Alice Smith", birthday=(1985, 5, 11), locale="en", center_code="la")

    # 20:00 in Shanghai, 05:00 in Los Angeles: May 11 in both.
    run_day(runtime, now=parse_instant("2026-05-11T12:00:00+00:00"))

    zh = only_event(runtime, "zh")
    assert zh.status == EventStatus.SENT
    assert zh.body is not None
    assert "张伟" in zh.body
    assert "浦东汽车服务中心" in zh.body
    assert "36岁" in zh.body
    assert zh.body.endswith("回T退订")
    assert zh.body.count("回T退订") == 1

    en = only_event(runtime, "en")
    assert en.status == EventStatus.SENT
    assert en.body is not None
    assert "Alice Smith" in en.body
    assert "Sunset Motors" in en.body
    assert en.body.endswith("Reply STOP to opt out")
    assert en.body.count("Reply STOP to opt out") == 1


def test_greeting_without_birth_year_leaves_out_the_age(runtime: Runtime) -> None:
    add(runtime, "zh", name="李娜", birthday=(None, 5, 11), locale="zh_CN")
    add(runtime, "en", name="Bob Lee", birthday=(None, 5, 11), locale="en")

    run_day(runtime, now=parse_instant("2026-05-11T02:00:00+00:00"))

    zh = only_event(runtime, "zh")
    assert zh.context["age"] is None
    assert zh.status == EventStatus.SENT
    assert zh.body is not None
    assert "李娜" in zh.body
    assert "您的生日" in zh.body
    assert "岁" not in zh.body
    assert "None" not in zh.body

    en = only_event(runtime, "en")
    assert en.status == EventStatus.SENT
    assert en.body is not None
    assert "Bob Lee" in en.body
    assert "None" not in en.body
