"""The maintenance plugin: due by time or mileage, reminders before and on the day, pacing, narrowing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from careflow.customers.service_due import VisitFact, add_months, km_per_day, next_service
from careflow.planning.capacity import PacedItem, pace_to_capacity
from careflow.planning.plan import plan
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import CareEvent, Customer, Vehicle
from careflow.testing import add_customer, build_runtime, make_settings, parse_instant
from careflow.testing.records import add_vehicle, add_visit

NOW = parse_instant("2026-02-01T10:00:00+08:00")
CENTER = {"main": {"name": "Anxin Auto", "timezone": "Asia/Shanghai", "locale": "zh_CN"}}


def make_runtime(url: str, batch_size: int = 2_000, **maintenance: Any) -> Runtime:
    settings = make_settings(
        url,
        centers=CENTER,
        scheduler={"batch_size": batch_size},
        plugins={"maintenance": {"enabled": True, **maintenance}},
    )
    return build_runtime(settings)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = make_runtime(f"sqlite:///{tmp_path / 'm.db'}")
    yield rt
    rt.close()


def recorded(runtime: Runtime) -> list[tuple[str, str, str, date]]:
    """(customer external id, occasion, period, due_date) of every recorded event, in order."""
    with runtime.sessions() as session:
        rows = session.execute(
            select(Customer.external_id, CareEvent.occasion, CareEvent.period, CareEvent.due_date)
            .join(Customer, Customer.id == CareEvent.customer_id)
            .order_by(CareEvent.id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def serviced_car(
    runtime: Runtime,
    external_id: str,
    last_service: date,
    *,
    months: int = 6,
    km: int | None = None,
    **kw: Any,
) -> int:
    """A customer whose car had its last maintenance on ``last_service``; returns the vehicle id."""
    with runtime.sessions() as session:
        customer = add_customer(session, external_id=external_id, **kw)
        vehicle = add_vehicle(
            session, customer, plate=f"沪A{external_id}", interval_months=months, interval_km=km
        )
        add_visit(session, vehicle, day=last_service, mileage=None)
        session.commit()
        return vehicle.id


# --- due logic -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (date(2025, 1, 31), 1, date(2025, 2, 28)),  # month end, common year
        (date(2024, 1, 31), 1, date(2024, 2, 29)),  # month end, leap year
        (date(2024, 2, 29), 12, date(2025, 2, 28)),  # leap day + a year
        (date(2025, 8, 31), 6, date(2026, 2, 28)),
        (date(2025, 11, 30), 3, date(2026, 2, 28)),  # across the year end
        (date(2025, 12, 15), 1, date(2026, 1, 15)),
        (date(2026, 3, 31), 1, date(2026, 4, 30)),
    ],
)
def test_add_months_clamps_to_the_month_end(start: date, months: int, expected: date) -> None:
    assert add_months(start, months) == expected


def test_mileage_first_when_the_car_is_driven_a_lot() -> None:
    visits = [
        VisitFact(date(2026, 1, 1), 10_000, "maintenance"),
        VisitFact(date(2026, 1, 21), 12_000, "repair"),  # 100 km a day
    ]
    due = next_service(visits, purchase_date=None, interval_months=6, interval_km=5_000)
    assert due is not None
    # 15,000 km is reached 30 days after the 12,000 km reading, long before July.
    assert (due.due, due.reason, due.cycle_start) == (date(2026, 2, 20), "mileage", date(2026, 1, 1))


def test_time_first_when_the_car_is_rarely_driven() -> None:
    visits = [
        VisitFact(date(2025, 7, 31), 20_000, "maintenance"),
        VisitFact(date(2025, 12, 31), 21_000, "repair"),
    ]
    due = next_service(visits, purchase_date=None, interval_months=6, interval_km=10_000)
    assert due is not None
    assert (due.due, due.reason) == (date(2026, 1, 31), "time")


def test_single_reading_estimates_from_the_purchase_date_else_time_only() -> None:
    one = [VisitFact(date(2026, 1, 1), 3_650, "maintenance")]
    assert km_per_day(one, date(2025, 1, 1)) == pytest.approx(10.0)
    assert km_per_day(one, None) is None
    due = next_service(one, purchase_date=None, interval_months=6, interval_km=1_000)
    assert due is not None and due.reason == "time"  # no rate, no mileage estimate
    due = next_service(one, purchase_date=date(2025, 1, 1), interval_months=6, interval_km=1_000)
    assert due is not None and (due.due, due.reason) == (date(2026, 4, 11), "mileage")


def test_a_new_car_counts_from_its_purchase_date() -> None:
    due = next_service([], purchase_date=date(2024, 2, 29), interval_months=12, interval_km=None)
    assert due is not None and (due.due, due.cycle_start) == (date(2025, 2, 28), date(2024, 2, 29))
    assert next_service([], purchase_date=None, interval_months=6, interval_km=None) is None


# --- reminders --------------------------------------------------------------------------------


def test_reminds_seven_days_before_and_on_the_due_day_once_each(runtime: Runtime) -> None:
    vid = serviced_car(runtime, "C1", date(2026, 1, 31), months=1)  # due Feb 28 (Jan 31 + 1 month)
    period = f"{vid}-2026-01-31"
    for day in range(1, 21):  # Feb 1..20: nothing yet
        plan(runtime, now=NOW, day=date(2026, 2, day))
    assert recorded(runtime) == []
    for _ in range(2):  # a re-run the same day records nothing new
        plan(runtime, now=NOW, day=date(2026, 2, 21))
    assert recorded(runtime) == [("C1", "service-soon", period, date(2026, 2, 21))]
    for day in range(22, 29):
        plan(runtime, now=NOW, day=date(2026, 2, day))
    for day in range(1, 10):
        plan(runtime, now=NOW, day=date(2026, 3, day))
    assert recorded(runtime) == [
        ("C1", "service-soon", period, date(2026, 2, 21)),
        ("C1", "service-due", period, date(2026, 2, 28)),
        # Not serviced yet: the first overdue step, a week after the due day.
        ("C1", "service-overdue", f"{period}+7d", date(2026, 3, 7)),
    ]


def test_a_missed_run_still_reminds_late_within_the_window(runtime: Runtime) -> None:
    serviced_car(runtime, "C1", date(2026, 1, 31), months=1)  # due Feb 28
    plan(runtime, now=NOW, day=date(2026, 2, 25))  # first run in the window: reminded at once
    plan(runtime, now=NOW, day=date(2026, 3, 2))  # the due-day run was missed: 2 days late is fine
    assert [(o, d) for _, o, _, d in recorded(runtime)] == [
        ("service-soon", date(2026, 2, 25)),
        ("service-due", date(2026, 3, 2)),
    ]


def test_a_new_maintenance_visit_stops_the_reminders_and_starts_a_new_cycle(runtime: Runtime) -> None:
    vid = serviced_car(runtime, "C1", date(2026, 1, 31), months=1)
    plan(runtime, now=NOW, day=date(2026, 2, 21))
    with runtime.sessions() as session:
        vehicle = session.get(Vehicle, vid)
        assert vehicle is not None
        add_visit(session, vehicle, day=date(2026, 2, 24))  # came in early
        session.commit()
        assert vehicle.next_service_due == date(2026, 3, 24)
    plan(runtime, now=NOW, day=date(2026, 2, 28))  # the old due day: nothing
    assert [o for _, o, _, _ in recorded(runtime)] == ["service-soon"]
    plan(runtime, now=NOW, day=date(2026, 3, 17))
    assert recorded(runtime)[-1] == ("C1", "service-soon", f"{vid}-2026-02-24", date(2026, 3, 17))


def test_a_repair_visit_does_not_reset_the_cycle(runtime: Runtime) -> None:
    vid = serviced_car(runtime, "C1", date(2026, 1, 31), months=1)
    with runtime.sessions() as session:
        vehicle = session.get(Vehicle, vid)
        assert vehicle is not None
        add_visit(session, vehicle, day=date(2026, 2, 10), kind="repair")
        session.commit()
    plan(runtime, now=NOW, day=date(2026, 2, 28))
    assert [o for _, o, _, _ in recorded(runtime)] == ["service-due"]


def test_warranty_reminder_thirty_days_before_once(runtime: Runtime) -> None:
    with runtime.sessions() as session:
        customer = add_customer(session, external_id="W1")
        add_vehicle(
            session,
            customer,
            purchase_date=date(2023, 3, 31),
            warranty_end=date(2026, 3, 31),
            interval_months=None,
        )
        session.commit()
    plan(runtime, now=NOW, day=date(2026, 2, 28))  # 31 days before
    assert recorded(runtime) == []
    plan(runtime, now=NOW, day=date(2026, 3, 1))
    plan(runtime, now=NOW, day=date(2026, 3, 20))
    plan(runtime, now=NOW, day=date(2026, 3, 31))
    assert [(o, d) for _, o, _, d in recorded(runtime)] == [("warranty-ending", date(2026, 3, 1))]


def test_each_customer_is_reminded_on_their_own_local_day(runtime: Runtime) -> None:
    serviced_car(runtime, "SH", date(2026, 1, 31), months=1, timezone="Asia/Shanghai")
    serviced_car(runtime, "LA", date(2026, 1, 31), months=1, timezone="America/Los_Angeles")
    # Feb 28, 09:00 in Shanghai is still Feb 27 in Los Angeles.
    plan(runtime, now=parse_instant("2026-02-28T09:00:00+08:00"))
    got = {(c, o, d) for c, o, _, d in recorded(runtime)}
    assert got == {("SH", "service-due", date(2026, 2, 28)), ("LA", "service-soon", date(2026, 2, 27))}
    plan(runtime, now=parse_instant("2026-02-28T09:00:00-08:00"))
    assert ("LA", "service-due", date(2026, 2, 28)) in {(c, o, d) for c, o, _, d in recorded(runtime)}


def test_dst_change_day_is_planned_on_the_local_date(runtime: Runtime) -> None:
    # Los Angeles springs forward at 02:00 on 2026-03-08; service is due that day.
    serviced_car(runtime, "LA", date(2026, 2, 8), months=1, timezone="America/Los_Angeles")
    plan(runtime, now=parse_instant("2026-03-08T07:59:00+00:00"))  # 23:59 PST, March 7
    assert [o for _, o, _, _ in recorded(runtime)] == ["service-soon"]
    plan(runtime, now=parse_instant("2026-03-08T10:00:00+00:00"))  # 03:00 PDT, March 8
    assert [(o, d) for _, o, _, d in recorded(runtime)][-1] == ("service-due", date(2026, 3, 8))


# --- overdue cars ----------------------------------------------------------------------------


def days(first: date, last: date) -> Iterator[date]:
    for offset in range((last - first).days + 1):
        yield first + timedelta(days=offset)


def test_an_overdue_car_is_reminded_at_each_step_until_a_visit_is_recorded(runtime: Runtime) -> None:
    kept = serviced_car(runtime, "KEPT", date(2026, 1, 31), months=1)  # due Feb 28, never comes in
    came = serviced_car(runtime, "CAME", date(2026, 1, 31), months=1)  # comes in on March 10
    for day in days(date(2026, 2, 21), date(2026, 4, 30)):
        if day == date(2026, 3, 11):
            with runtime.sessions() as session:
                vehicle = session.get(Vehicle, came)
                assert vehicle is not None
                add_visit(session, vehicle, day=date(2026, 3, 10))  # recorded the day after
                session.commit()
        plan(runtime, now=NOW, day=day)
        plan(runtime, now=NOW, day=day)  # a re-run repeats nothing
    cycle = f"{kept}-2026-01-31"
    assert [(o, p, d) for c, o, p, d in recorded(runtime) if c == "KEPT"] == [
        ("service-soon", cycle, date(2026, 2, 21)),
        ("service-due", cycle, date(2026, 2, 28)),
        ("service-overdue", f"{cycle}+7d", date(2026, 3, 7)),
        ("service-overdue", f"{cycle}+30d", date(2026, 3, 30)),
    ]
    # The visit ended the old cycle's cadence; the new cycle (due April 10) has its own.
    old, new = f"{came}-2026-01-31", f"{came}-2026-03-10"
    assert [(o, p, d) for c, o, p, d in recorded(runtime) if c == "CAME"] == [
        ("service-soon", old, date(2026, 2, 21)),
        ("service-due", old, date(2026, 2, 28)),
        ("service-overdue", f"{old}+7d", date(2026, 3, 7)),
        ("service-soon", new, date(2026, 4, 3)),
        ("service-due", new, date(2026, 4, 10)),
        ("service-overdue", f"{new}+7d", date(2026, 4, 17)),
    ]


def test_a_car_first_seen_overdue_gets_the_step_that_fits_today_once(tmp_path: Path) -> None:
    rt = make_runtime(f"sqlite:///{tmp_path / 'o.db'}", batch_size=2)
    try:
        go_live = date(2026, 5, 11)
        # Records imported at go-live: due 100, 10, 2 and 400 days ago.
        for name, overdue in (("LONG", 100), ("WEEK", 10), ("JUST", 2), ("GONE", 400)):
            due = go_live - timedelta(days=overdue)
            serviced_car(rt, name, add_months(due, -1), months=1)
        for day in days(go_live, go_live + timedelta(days=25)):
            plan(rt, now=NOW, day=day)
            plan(rt, now=NOW, day=day)
        got = [(c, o, p.rsplit("+", 1)[-1] if "+" in p else "", d) for c, o, p, d in recorded(rt)]
        assert sorted(got) == sorted(
            [
                ("LONG", "service-overdue", "30d", go_live),  # one step, not a burst of +7 and +30
                ("WEEK", "service-overdue", "7d", go_live),
                ("WEEK", "service-overdue", "30d", go_live + timedelta(days=20)),
                ("JUST", "service-due", "", go_live),  # within late_days: said as "was due on"
                ("JUST", "service-overdue", "7d", go_live + timedelta(days=5)),
            ]
        )  # GONE: more than overdue_max_days (365) past due
    finally:
        rt.close()


def test_late_and_overdue_reminders_never_say_today(tmp_path: Path) -> None:
    rt = make_runtime(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        day = date(2026, 5, 11)
        for name, locale, overdue in (
            ("ZH", "zh_CN", 40),
            ("EN", "en", 40),
            ("ZL", "zh_CN", 2),
            ("EL", "en", 2),
        ):
            due = day - timedelta(days=overdue)
            serviced_car(rt, name, add_months(due, -1), months=1, locale=locale, name="王伟")
        run_day(rt, now=NOW, day=day)
        with rt.sessions() as session:
            rows = session.execute(
                select(Customer.external_id, CareEvent.occasion, CareEvent.body, CareEvent.status).join(
                    Customer, Customer.id == CareEvent.customer_id
                )
            ).all()
        bodies = {c: b for c, _, b, _ in rows}
        assert {(c, o, st) for c, o, _, st in rows} == {
            ("ZH", "service-overdue", "sent"),
            ("EN", "service-overdue", "sent"),
            ("ZL", "service-due", "sent"),
            ("EL", "service-due", "sent"),
        }
        assert "2026年4月1日" in bodies["ZH"] and "超期" in bodies["ZH"] and "今天" not in bodies["ZH"]
        assert "2026年5月9日" in bodies["ZL"] and "超期" in bodies["ZL"] and "今天" not in bodies["ZL"]
        assert "overdue for service: it was due on April 1, 2026" in bodies["EN"]
        assert "was due on May 9, 2026" in bodies["EL"] and "today" not in bodies["EL"]
    finally:
        rt.close()


def test_overdue_cars_already_reminded_at_their_step_are_never_loaded(db_url: str) -> None:
    # On PostgreSQL too: the outbox key is matched in SQL, dates and ids cast to text.
    runtime = make_runtime(db_url)
    try:
        _reminded_overdue_cars_are_not_loaded(runtime)
    finally:
        runtime.close()


def _reminded_overdue_cars_are_not_loaded(runtime: Runtime) -> None:
    reminded = serviced_car(runtime, "DONE", date(2025, 12, 1), months=1)  # due Jan 1: 130 days late
    plan(runtime, now=NOW, day=date(2026, 5, 11))
    assert [o for _, o, _, _ in recorded(runtime)] == ["service-overdue"]
    waiting = serviced_car(runtime, "NEW", date(2025, 12, 2), months=1)  # arrives a day later
    loaded: list[int] = []

    def on_load(target: Vehicle, _ctx: Any) -> None:
        loaded.append(target.id)

    event.listen(Vehicle, "load", on_load)
    try:
        plan(runtime, now=NOW, day=date(2026, 5, 12))
    finally:
        event.remove(Vehicle, "load", on_load)
    assert waiting in loaded and reminded not in loaded
    assert [c for c, o, _, _ in recorded(runtime)] == ["DONE", "NEW"]


def test_overdue_catch_ups_are_paced_to_capacity_and_each_sent_once(db_url: str) -> None:
    rt = make_runtime(db_url, batch_size=2, daily_capacity=2, max_advance_days=0)
    try:
        go_live = date(2026, 5, 11)
        for i, overdue in enumerate((45, 46, 47, 48, 49)):  # first seen long overdue
            due = go_live - timedelta(days=overdue)
            serviced_car(rt, f"OLD{i}", add_months(due, -1), months=1)
        serviced_car(rt, "STEP", add_months(go_live - timedelta(days=7), -1), months=1)  # +7 falls today
        for day in days(go_live, go_live + timedelta(days=5)):
            plan(rt, now=NOW, day=day)
            plan(rt, now=NOW, day=day)
        events = [(c, d) for c, o, _, d in recorded(rt) if o == "service-overdue"]
        assert sorted(c for c, _ in events) == ["OLD0", "OLD1", "OLD2", "OLD3", "OLD4", "STEP"]  # once each
        by_day: dict[date, set[str]] = {}
        for customer, day in events:
            by_day.setdefault(day, set()).add(customer)
        # Two a day; a step falling today is never held back; catch-ups the longest overdue first.
        assert by_day == {
            go_live: {"STEP", "OLD4"},
            go_live + timedelta(days=1): {"OLD3", "OLD2"},
            go_live + timedelta(days=2): {"OLD1", "OLD0"},
        }
    finally:
        rt.close()


def test_overdue_settings_are_validated(tmp_path: Path) -> None:
    from careflow.errors import ConfigError

    with pytest.raises(ConfigError, match=r"plugins\.maintenance.*overdue_reminder_days.*out of range"):
        make_runtime(f"sqlite:///{tmp_path / 'v.db'}", overdue_reminder_days=[0, 30])
    with pytest.raises(ConfigError, match=r"past overdue_max_days \(60\)"):
        make_runtime(f"sqlite:///{tmp_path / 'v.db'}", overdue_reminder_days=[7, 90], overdue_max_days=60)


# --- capacity pacing -------------------------------------------------------------------------


def test_pace_spreads_earliest_due_first_and_keeps_everyone() -> None:
    today = date(2026, 3, 1)
    items = [PacedItem(date(2026, 3, 10), i) for i in range(1, 6)] + [PacedItem(date(2026, 3, 11), 6)]
    plan_ = pace_to_capacity(items, today=today, capacity=2, max_advance_days=14)
    # Never later than its natural day; the lowest ids (earliest in order) pushed earliest.
    assert plan_ == {
        6: date(2026, 3, 11),
        5: date(2026, 3, 10),
        4: date(2026, 3, 10),
        3: date(2026, 3, 9),
        2: date(2026, 3, 9),
        1: date(2026, 3, 8),
    }
    # More than the window can take: the rest keep their natural day rather than being dropped.
    crowd = [PacedItem(date(2026, 3, 3), i) for i in range(10)]
    crowded = pace_to_capacity(crowd, today=today, capacity=1, max_advance_days=5)
    assert sorted(crowded) == list(range(10))
    assert all(today <= d <= date(2026, 3, 3) for d in crowded.values())
    # Deterministic: the same input gives the same plan in any order.
    assert pace_to_capacity(list(reversed(items)), today=today, capacity=2, max_advance_days=14) == plan_


def test_capacity_pacing_spreads_reminders_stably_and_reminds_everyone(tmp_path: Path) -> None:
    rt = make_runtime(f"sqlite:///{tmp_path / 'p.db'}", batch_size=3, daily_capacity=2, max_advance_days=5)
    try:
        # Seven cars due on March 15 and one on March 16: a shop taking two a day.
        for i in range(7):
            serviced_car(rt, f"A{i}", date(2026, 2, 15), months=1)
        serviced_car(rt, "Z", date(2026, 2, 16), months=1)
        first = date(2026, 3, 1)
        for offset in range(15):
            day = first + timedelta(days=offset)
            plan(rt, now=NOW, day=day)
            plan(rt, now=NOW, day=day)  # re-run: nothing new, nothing moved
        events = [(c, d) for c, o, _, d in recorded(rt) if o == "service-soon"]
        assert sorted(c for c, _ in events) == sorted([f"A{i}" for i in range(7)] + ["Z"])  # each once
        per_day = Counter(d for _, d in events)
        assert max(per_day.values()) <= 2
        assert min(per_day) >= date(2026, 3, 3)  # at most 5 days earlier than March 8
        assert all(d <= date(2026, 3, 8) for c, d in events if c != "Z")
        z_day = next(d for c, d in events if c == "Z")
        assert z_day == date(2026, 3, 9)  # the later-due car keeps its natural day
    finally:
        rt.close()


def test_cars_arriving_day_by_day_are_each_reminded_once_and_in_time(tmp_path: Path) -> None:
    rt = make_runtime(f"sqlite:///{tmp_path / 'd.db'}", daily_capacity=1, max_advance_days=3)
    try:
        # Every day a new car joins the queue for March 15 (natural reminder day March 8):
        # later arrivals push earlier ones earlier, and nobody may fall through.
        for offset in range(8):
            day = date(2026, 3, 1) + timedelta(days=offset)
            serviced_car(rt, f"N{offset}", date(2026, 2, 15), months=1)
            plan(rt, now=NOW, day=day)
        events = [(c, d) for c, o, _, d in recorded(rt) if o == "service-soon"]
        assert sorted(c for c, _ in events) == [f"N{i}" for i in range(8)]
        assert all(date(2026, 3, 5) <= d <= date(2026, 3, 8) for _, d in events)
    finally:
        rt.close()


def test_pacing_without_capacity_sends_all_on_the_natural_day(runtime: Runtime) -> None:
    for i in range(5):
        serviced_car(runtime, f"A{i}", date(2026, 2, 15), months=1)
    plan(runtime, now=NOW, day=date(2026, 3, 8))
    assert len(recorded(runtime)) == 5


def test_per_center_capacity_overrides_the_default(tmp_path: Path) -> None:
    rt = make_runtime(
        f"sqlite:///{tmp_path / 'c.db'}", daily_capacity=100, centers={"main": {"daily_capacity": 1}}
    )
    try:
        for i in range(3):
            serviced_car(rt, f"A{i}", date(2026, 2, 15), months=1)
        plan(rt, now=NOW, day=date(2026, 3, 6))
        assert len(recorded(rt)) == 1  # one a day: the 6th, 7th and 8th
    finally:
        rt.close()


# --- narrowing, templates, idempotency ---------------------------------------------------------


def test_vehicles_not_near_a_date_are_never_loaded(runtime: Runtime) -> None:
    due_id = serviced_car(runtime, "DUE", date(2026, 1, 31), months=1)
    far_id = serviced_car(runtime, "FAR", date(2026, 1, 31), months=12)
    loaded: list[tuple[str, int]] = []

    def on_load(target: Any, _ctx: Any) -> None:
        loaded.append((type(target).__name__, target.id))

    event.listen(Vehicle, "load", on_load)
    event.listen(Customer, "load", on_load)
    try:
        plan(runtime, now=NOW, day=date(2026, 2, 28))
    finally:
        event.remove(Vehicle, "load", on_load)
        event.remove(Customer, "load", on_load)
    assert ("Vehicle", due_id) in loaded
    assert ("Vehicle", far_id) not in loaded
    with runtime.sessions() as session:
        far_customer = session.scalar(select(Customer.id).where(Customer.external_id == "FAR"))
    assert ("Customer", far_customer) not in loaded


def test_messages_render_in_both_locales_with_plate_due_date_reason_and_voucher(tmp_path: Path) -> None:
    rt = make_runtime(f"sqlite:///{tmp_path / 't.db'}")
    try:
        serviced_car(rt, "ZH", date(2026, 1, 31), months=1, locale="zh_CN", name="王伟")
        serviced_car(rt, "EN", date(2026, 1, 31), months=1, locale="en", name="Emma Clarke")
        with rt.sessions() as session:
            from careflow.storage.models import Voucher

            zh = session.scalar(select(Customer).where(Customer.external_id == "ZH"))
            assert zh is not None
            session.add(
                Voucher(
                    code="V-TEST-0001",
                    customer_id=zh.id,
                    kind="repair",
                    points=1000,
                    value=100,
                    issued_on=date(2026, 2, 1),
                    expires_on=date(2026, 8, 1),
                )
            )
            en = session.scalar(select(Customer).where(Customer.external_id == "EN"))
            assert en is not None
            # Issued before EN's last service on Jan 31: that visit was its "next maintenance".
            session.add(
                Voucher(
                    code="V-LAPS-0001",
                    customer_id=en.id,
                    kind="repair",
                    points=1000,
                    value=100,
                    issued_on=date(2026, 1, 1),
                    expires_on=date(2026, 8, 1),
                )
            )
            session.commit()
        run_day(rt, now=NOW, day=date(2026, 2, 21))
        with rt.sessions() as session:
            bodies = dict(
                session.execute(
                    select(Customer.external_id, CareEvent.body).join(
                        Customer, Customer.id == CareEvent.customer_id
                    )
                ).all()
            )
            statuses = set(session.scalars(select(CareEvent.status)))
        assert statuses == {"sent"}
        assert "沪AZH" in bodies["ZH"] and "2026年2月28日" in bodies["ZH"] and "距上次保养" in bodies["ZH"]
        assert "V-TEST-0001" in bodies["ZH"] and "维修代金券" in bodies["ZH"]
        assert "沪AEN" in bodies["EN"] and "February 28, 2026" in bodies["EN"] and "Camry" in bodies["EN"]
        assert "voucher" not in bodies["EN"]
    finally:
        rt.close()


def test_settings_are_validated_at_start_up(tmp_path: Path) -> None:
    from careflow.errors import ConfigError

    with pytest.raises(ConfigError, match=r"plugins\.maintenance.*days_before"):
        make_runtime(f"sqlite:///{tmp_path / 'v.db'}", days_before=0)
    with pytest.raises(ConfigError, match=r"plugins\.maintenance.*daily_capacit"):
        make_runtime(f"sqlite:///{tmp_path / 'v.db'}", centers={"main": {"daily_capacity": "lots"}})


def test_rerunning_a_day_records_nothing_twice(db_url: str) -> None:
    rt = make_runtime(db_url, batch_size=1, daily_capacity=1)
    try:
        for i in range(3):
            serviced_car(rt, f"A{i}", date(2026, 1, 31), months=1)
        # Due Feb 28, natural reminder day Feb 21: one a day is Feb 19, 20 and 21.
        first = plan(rt, now=NOW, day=date(2026, 2, 19))
        again = plan(rt, now=NOW, day=date(2026, 2, 19))
        assert first.new == 1 and again.new == 0
        assert [c for c, _, _, _ in recorded(rt)] == ["A0"]  # ties: the lowest vehicle id goes first
    finally:
        rt.close()
