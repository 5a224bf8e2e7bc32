"""Segments: A/B/C, warranty, activity and RFM in set-based SQL; plugins limited to segments centrally."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from sqlalchemy import event, select

from careflow.customers.segments import matches, refresh_segments
from careflow.errors import ConfigError
from careflow.planning.plan import plan
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import Customer, CustomerSegment, Vehicle
from careflow.testing import add_customer, add_visit, loaded_customers, parse_instant
from tests.plugins.helpers import events, recipients, runtime_with

NOW = parse_instant("2026-11-23T10:00:00+08:00")
TODAY = date(2026, 11, 23)


@pytest.fixture
def runtime(careflow_db_url: str) -> Iterator[Runtime]:
    rt = runtime_with(careflow_db_url, {})
    yield rt
    rt.close()


@pytest.fixture
def runtime_any_db(db_url: str) -> Iterator[Runtime]:
    """The same runtime on SQLite and on PostgreSQL, for tests whose SQL differs between them."""
    rt = runtime_with(db_url, {})
    yield rt
    rt.close()


def _customer(rt: Runtime, ext: str, visits: list[tuple[date, int]], **kw: Any) -> int:
    with rt.sessions.begin() as session:
        c = add_customer(session, external_id=ext, **kw)
        for day, amount in visits:
            add_visit(session, c, day, amount=amount)
        return c.id


def _segments(rt: Runtime, **cfg: Any) -> dict[str, CustomerSegment]:
    settings = rt.settings.segments.model_copy(update=cfg)
    with rt.sessions.begin() as session:
        refresh_segments(session, settings, now=NOW)
    with rt.sessions() as session:
        rows = session.execute(select(Customer.external_id, CustomerSegment).join(CustomerSegment))
        return {ext: seg for ext, seg in rows}


def _visits(n: int, amount: int, last: date = date(2026, 10, 1)) -> list[tuple[date, int]]:
    return [
        (date(last.year, last.month - i, 1) if last.month > i else date(2025, 12, 1), amount)
        for i in range(n)
    ]


def test_tiers_by_thresholds_only_count_the_last_12_months(runtime_any_db: Runtime) -> None:
    runtime = runtime_any_db
    _customer(runtime, "frequent-big", _visits(4, 1500))  # 4 visits, 6000: A
    _customer(runtime, "frequent-small", _visits(4, 100))  # 4 visits but 400: B (visits)
    _customer(runtime, "one-big", [(date(2026, 6, 1), 2000)])  # 1 visit, 2000: B (spend)
    _customer(runtime, "one-small", [(date(2026, 6, 1), 200)])  # C
    # Lots of spend, but more than 12 months ago (Nov 22, 2025 is one day outside the window).
    _customer(runtime, "old-big", [(date(2025, 11, 22), 9000)] * 5)
    _customer(runtime, "nothing", [])
    segs = _segments(runtime)
    assert {k: s.tier for k, s in segs.items()} == {
        "frequent-big": "A",
        "frequent-small": "B",
        "one-big": "B",
        "one-small": "C",
        "old-big": "C",
        "nothing": "C",
    }
    assert segs["old-big"].visits_12m == 0 and segs["old-big"].activity == "lapsed"
    assert segs["frequent-big"].spend_12m == 6000 and segs["frequent-big"].activity == "active"
    assert segs["nothing"].activity == "no_visits" and segs["nothing"].last_visit is None


def test_tiers_by_percentiles(runtime_any_db: Runtime) -> None:
    runtime = runtime_any_db
    for i in range(1, 11):  # spend 100 .. 1000
        _customer(runtime, f"c{i:02d}", [(date(2026, 6, 1), 100 * i)])
    segs = _segments(runtime, method="percentiles", a_top_percent=20, b_top_percent=50)
    tiers = {k: s.tier for k, s in segs.items()}
    assert [k for k, t in sorted(tiers.items()) if t == "A"] == ["c09", "c10"]
    assert [k for k, t in sorted(tiers.items()) if t == "B"] == ["c06", "c07", "c08"]


def test_rfm_scores_run_1_to_5(runtime_any_db: Runtime) -> None:
    runtime = runtime_any_db
    for i in range(1, 6):  # i visits, i*100 each, the last one i months after May
        _customer(runtime, f"r{i}", [(date(2026, 5 + i, 1 + k), 100 * i) for k in range(i)])
    _customer(runtime, "none", [])
    segs = _segments(runtime)
    assert [
        (segs[f"r{i}"].recency, segs[f"r{i}"].frequency, segs[f"r{i}"].monetary) for i in range(1, 6)
    ] == [(i, i, i) for i in range(1, 6)]
    assert (segs["none"].recency, segs["none"].frequency, segs["none"].monetary) == (1, 1, 1)


def test_warranty_and_lapsed(runtime: Runtime) -> None:
    ids = {
        "covered": _customer(runtime, "covered", [(date(2025, 1, 1), 100)]),
        "expired": _customer(runtime, "expired", [(date(2026, 3, 1), 100)]),
        "ends-today": _customer(runtime, "ends-today", []),
    }
    with runtime.sessions.begin() as session:
        session.add(Vehicle(customer_id=ids["covered"], plate="沪A1", warranty_end=date(2027, 1, 1)))
        session.add(Vehicle(customer_id=ids["expired"], plate="沪A2", warranty_end=date(2026, 11, 22)))
        session.add(Vehicle(customer_id=ids["ends-today"], plate="沪A3", warranty_end=TODAY))
    segs = _segments(runtime, lapsed_after_months=9)
    assert {k: (s.warranty, s.activity) for k, s in segs.items()} == {
        "covered": ("warranty", "lapsed"),  # last visit Jan 2025: more than 9 months
        "expired": ("out_of_warranty", "active"),
        "ends-today": ("warranty", "no_visits"),
    }


def test_refresh_is_set_based_and_batchable(runtime_any_db: Runtime) -> None:
    runtime = runtime_any_db
    """The statement count does not grow with customers; batch size changes nothing but batching."""

    def statements(customers: int, batch_size: int) -> tuple[int, dict[str, tuple[Any, ...]]]:
        with runtime.sessions.begin() as session:
            for i in range(customers):
                c = add_customer(session, external_id=f"s{customers}-{batch_size}-{i}")
                add_visit(session, c, date(2026, 1 + i % 10, 1), amount=100 * (i % 7 + 1))
        executed: list[str] = []

        def count(*args: Any) -> None:
            executed.append(args[2])

        event.listen(runtime.engine, "before_cursor_execute", count)
        try:
            with loaded_customers() as seen:
                segs = _segments(runtime, batch_size=batch_size)
        finally:
            event.remove(runtime.engine, "before_cursor_execute", count)
        assert seen == []  # not one Customer object was built
        table = {k: (s.tier, s.recency, s.frequency, s.monetary) for k, s in segs.items()}
        return len(executed), table

    small, _ = statements(10, 100_000)
    large, whole = statements(40, 100_000)
    assert small == large
    _, batched = statements(0, 7)
    assert batched == whole


def test_plugins_limited_to_segments_centrally(db_url: str) -> None:
    rt = runtime_with(db_url, {"birthday": {"segments": ["A", "B"]}})
    try:
        _customer(rt, "top", _visits(4, 1500), birthday=(1980, 11, 23))
        _customer(rt, "casual", [(date(2026, 6, 1), 100)], birthday=(1981, 11, 23))
        report = plan(rt, now=NOW, day=TODAY)
        assert recipients(rt, "birthday") == ["top"]
        assert report.per_plugin["birthday"]["outside its segments"] == 1
    finally:
        rt.close()


def test_segment_settings_are_checked_at_start_up(careflow_db_url: str) -> None:
    with pytest.raises(ConfigError, match=r"plugins.birthday.*segments.*unknown segment 'gold'"):
        runtime_with(careflow_db_url, {"birthday": {"segments": ["A", "gold"]}})


def test_matching_rules() -> None:
    labels = {"A", "warranty", "lapsed"}
    assert matches(labels, ["A", "B"])
    assert matches(labels, ["A", "lapsed"])
    assert not matches(labels, ["B", "lapsed"])
    assert not matches(labels, ["A", "active"])
    assert matches(labels, [])


def test_templates_see_the_segment(careflow_db_url: str) -> None:
    rt = runtime_with(careflow_db_url, {"holidays": {}})
    try:
        _customer(rt, "top", _visits(4, 1500), locale="en")
        _customer(rt, "casual", [(date(2026, 6, 1), 100)], locale="en")
        run_day(rt, now=parse_instant("2026-12-25T10:00:00+08:00"))
        bodies = {e.customer_id: e.body or "" for e in events(rt, "holidays")}
        assert len(bodies) == 2
        assert sum("Thank you for your loyalty" in b for b in bodies.values()) == 1
    finally:
        rt.close()


def test_segments_are_computed_once_a_day_unless_their_inputs_change(runtime: Runtime) -> None:
    """The first run of a center's day computes its segments; later runs reuse them, until a
    customer, vehicle or visit is written, and a new day always computes them again."""
    from datetime import timedelta

    from careflow.planning.prepare import prepare_run

    customer_id = _customer(runtime, "S1", [(date(2026, 10, 1), 900), (date(2026, 9, 1), 900)])

    def stored() -> CustomerSegment:
        with runtime.sessions() as session:
            found = session.get(CustomerSegment, customer_id)
            assert found is not None
            return found

    prepare_run(runtime, {}, now=NOW, day=None)
    assert stored().tier == "B" and stored().computed_on == TODAY
    with runtime.sessions.begin() as session:  # changed behind careflow's back, to see a recompute
        segment = session.get(CustomerSegment, customer_id)
        assert segment is not None
        segment.tier = "C"
    prepare_run(runtime, {}, now=NOW + timedelta(hours=2), day=None)
    assert stored().tier == "C"  # the same day and no input changed: not computed again
    with runtime.sessions.begin() as session:  # two more big visits: an A customer now
        customer = session.get(Customer, customer_id)
        assert customer is not None
        add_visit(session, customer, date(2026, 11, 1), amount=4000)
        add_visit(session, customer, date(2026, 11, 2), amount=4000)
    prepare_run(runtime, {}, now=NOW + timedelta(hours=3), day=None)
    assert stored().tier == "A"
    with runtime.sessions.begin() as session:
        segment = session.get(CustomerSegment, customer_id)
        assert segment is not None
        segment.tier = "C"
    prepare_run(runtime, {}, now=NOW + timedelta(days=1), day=None)
    assert stored().tier == "A" and stored().computed_on == TODAY + timedelta(days=1)  # a new day


def test_the_scheduler_computes_segments_at_refresh_at_so_planning_finds_them_fresh(runtime: Runtime) -> None:
    """[segments] refresh_at (03:00 local by default) comes before plan_at (08:00): the day's
    planning reuses the segments the scheduler computed instead of computing them itself."""
    from careflow.service.scheduler import SchedulerService
    from careflow.storage.models import SchedulerRun

    customer_id = _customer(runtime, "S1", [(date(2026, 10, 1), 900), (date(2026, 9, 1), 900)])
    notes: list[str] = []
    service = SchedulerService(runtime, holder="a", enqueue=lambda ids: None, report=notes.append)

    def segment() -> CustomerSegment | None:
        with runtime.sessions() as session:
            return session.get(CustomerSegment, customer_id)

    service.tick(parse_instant("2026-11-23T02:59:00+08:00"))
    assert segment() is None  # not yet
    service.tick(parse_instant("2026-11-23T03:00:00+08:00"))
    computed = segment()
    assert computed is not None and computed.tier == "B" and computed.computed_on == TODAY
    assert any(note.startswith("segments main 2026-11-23: 1 customer") for note in notes)
    with runtime.sessions.begin() as session:  # to see whether planning computes them again
        stored = session.get(CustomerSegment, customer_id)
        assert stored is not None
        stored.tier = "C"
    service.tick(parse_instant("2026-11-23T08:00:00+08:00"))
    assert any(note.startswith("plan end main") for note in notes)
    assert segment().tier == "C"  # type: ignore[union-attr]  # planned without recomputing
    with runtime.sessions() as session:
        jobs = sorted(session.scalars(select(SchedulerRun.job)))
    assert jobs == ["plan:main", "segments:main"]
