"""Points ledger, vouchers and the points care plugin."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from careflow.customers.points import (
    PointsError,
    PointsRules,
    VisitForVoucher,
    adjust,
    balance,
    check_voucher,
    points_rules,
    redeem,
)
from careflow.errors import ConfigError
from careflow.planning.plan import plan
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import CareEvent, Customer, PointsEntry, Vehicle, Voucher
from careflow.testing import add_customer, build_runtime, make_settings, parse_instant
from careflow.testing.records import add_vehicle, add_visit

RULES = PointsRules()  # 1 point per 10 CNY, 24 months, 1000-point blocks, 100 CNY vouchers
NOW = parse_instant("2026-06-01T10:00:00+08:00")
CENTER = {"main": {"name": "Anxin Auto", "timezone": "Asia/Shanghai", "locale": "zh_CN"}}


def make_runtime(url: str, **points: Any) -> Runtime:
    settings = make_settings(url, centers=CENTER, plugins={"points": {"enabled": True, **points}})
    return build_runtime(settings)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = make_runtime(f"sqlite:///{tmp_path / 'p.db'}")
    yield rt
    rt.close()


@pytest.fixture
def session(runtime: Runtime) -> Iterator[Session]:
    with runtime.sessions() as s:
        yield s


def customer_with_car(session: Session, external_id: str = "C1", **kw: Any) -> tuple[Customer, Vehicle]:
    customer = add_customer(session, external_id=external_id, **kw)
    return customer, add_vehicle(session, customer, plate=f"沪A{external_id}")


# --- ledger -----------------------------------------------------------------------------------


def test_points_are_earned_per_amount_spent_and_rules_come_from_settings(runtime: Runtime) -> None:
    rules = points_rules(runtime.settings)
    assert rules is not None and rules.yuan_per_point == 10
    assert points_rules(make_settings("sqlite://")) is None  # programme off: nothing earned
    with runtime.sessions() as s:
        customer, car = customer_with_car(s)
        add_visit(s, car, day=date(2026, 1, 10), amount=Decimal("1234.50"), points=rules)
        assert balance(s, customer.id, date(2026, 6, 1)) == 123  # rounded down


def test_settings_are_validated_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"plugins\.points.*yuan_per_point"):
        make_runtime(f"sqlite:///{tmp_path / 'v.db'}", yuan_per_point=0)
    with pytest.raises(ConfigError, match=r"plugins\.points.*no_such_key"):
        make_runtime(f"sqlite:///{tmp_path / 'v.db'}", no_such_key=1)


def test_spending_takes_the_soonest_expiring_points_first_and_expired_points_are_gone(
    session: Session,
) -> None:
    customer, car = customer_with_car(session)
    add_visit(session, car, day=date(2024, 5, 1), amount=3000, points=RULES)  # 300, expires 2026-05-01
    add_visit(session, car, day=date(2025, 3, 1), amount=5000, kind="repair", points=RULES)  # 500, 2027-03-01
    add_visit(session, car, day=date(2025, 9, 1), amount=4000, kind="repair", points=RULES)  # 400, 2027-09-01
    assert balance(session, customer.id, date(2026, 4, 30)) == 1200
    adjust(session, customer, -350, reason="goodwill correction", today=date(2026, 4, 30), rules=RULES)
    lots = {
        e.entry_date: e.remaining
        for e in session.scalars(select(PointsEntry).where(PointsEntry.kind == "earn"))
    }
    assert lots == {date(2024, 5, 1): 0, date(2025, 3, 1): 450, date(2025, 9, 1): 400}
    assert balance(session, customer.id, date(2026, 4, 30)) == 850
    # On 2027-03-01 the 2025-03-01 lot has expired: only the newest lot is left to spend.
    assert balance(session, customer.id, date(2027, 3, 1)) == 400
    with pytest.raises(PointsError, match="not enough points: 500 needed, 400 available"):
        adjust(session, customer, -500, reason="x", today=date(2027, 3, 1), rules=RULES)


def test_adjustments_need_a_reason_and_add_a_lot(session: Session) -> None:
    customer, _ = customer_with_car(session)
    with pytest.raises(PointsError, match="reason"):
        adjust(session, customer, 100, reason=" ", today=date(2026, 1, 1), rules=RULES)
    entry = adjust(session, customer, 100, reason="birthday gift", today=date(2026, 1, 31), rules=RULES)
    assert (entry.remaining, entry.expires_on) == (100, date(2028, 1, 31))


def test_reimporting_a_visit_never_earns_twice(runtime: Runtime) -> None:
    from careflow.customers.import_records import VisitImporter

    csv = "customer_external_id,plate,date,mileage,amount,kind\nC1,沪AC1,2026-05-01,10000,2500,maintenance\n"
    with runtime.sessions() as s:
        customer, _ = customer_with_car(s)
        center = customer.center
        for _ in range(3):
            VisitImporter(s, center, date(2026, 6, 1), points=RULES).run_text(csv)
        assert balance(s, customer.id, date(2026, 6, 1)) == 250
        corrected = csv.replace("2500", "3000")
        VisitImporter(s, center, date(2026, 6, 1), points=RULES).run_text(corrected)
        assert balance(s, customer.id, date(2026, 6, 1)) == 300
        assert s.scalar(select(PointsEntry.points).where(PointsEntry.kind == "earn")) == 300


# --- vouchers ---------------------------------------------------------------------------------


def rich_customer(
    session: Session, external_id: str = "C1", points: int = 2500, earned: date = date(2026, 1, 10)
) -> tuple[Customer, Vehicle]:
    customer, car = customer_with_car(session, external_id)
    add_visit(session, car, day=earned, kind="repair", amount=points * 10, points=RULES)
    return customer, car


def test_redeem_makes_a_unique_voucher_and_refuses_without_enough_points(session: Session) -> None:
    customer, _ = rich_customer(session, points=2500)
    today = date(2026, 6, 1)
    first = redeem(session, customer, kind="repair", blocks=2, today=today, rules=RULES)
    assert (first.points, first.value, first.expires_on) == (2000, Decimal(200), date(2026, 11, 28))
    assert balance(session, customer.id, today) == 500
    with pytest.raises(PointsError, match="not enough points: 1000 needed, 500 available"):
        redeem(session, customer, kind="accessory", blocks=1, today=today, rules=RULES)  # a second redemption
    adjust(session, customer, 1500, reason="promotion", today=today, rules=RULES)
    second = redeem(session, customer, kind="accessory", blocks=1, today=today, rules=RULES)
    assert second.code != first.code and second.code.startswith("V-")
    with pytest.raises(PointsError, match="unknown voucher kind"):
        redeem(session, customer, kind="fuel", blocks=1, today=today, rules=RULES)


def test_a_redemption_dated_in_the_past_cannot_spend_points_earned_after_it(session: Session) -> None:
    customer, _ = rich_customer(session, points=1000, earned=date(2026, 3, 1))
    with pytest.raises(PointsError, match="not enough points: 1000 needed, 0 available"):
        redeem(session, customer, kind="repair", blocks=1, today=date(2026, 2, 1), rules=RULES)
    assert balance(session, customer.id, date(2026, 2, 1)) == 0
    assert balance(session, customer.id, date(2026, 3, 1)) == 1000


def use(session: Session, customer: Customer, code: str, day: date, kind: str = "maintenance") -> Voucher:
    return check_voucher(session, code, VisitForVoucher(customer.id, day, kind, None))


def test_voucher_only_at_a_maintenance_visit_once_before_expiry_by_its_owner(session: Session) -> None:
    customer, car = rich_customer(session)
    other, _ = rich_customer(session, "C2")
    voucher = redeem(session, customer, kind="repair", blocks=1, today=date(2026, 6, 1), rules=RULES)
    with pytest.raises(PointsError, match="only at a maintenance visit, not a repair visit"):
        use(session, customer, voucher.code, date(2026, 6, 5), kind="repair")
    with pytest.raises(PointsError, match="belongs to another customer"):
        use(session, other, voucher.code, date(2026, 6, 5))
    with pytest.raises(PointsError, match="expired on 2026-11-28"):
        use(session, customer, voucher.code, date(2026, 11, 29))
    with pytest.raises(PointsError, match="no such voucher"):
        use(session, customer, "V-NOPE-NOPE", date(2026, 6, 5))
    assert use(session, customer, voucher.code.lower(), date(2026, 11, 28)) is voucher  # last valid day
    from careflow.customers.points import use_voucher

    visit = add_visit(session, car, day=date(2026, 6, 5))
    use_voucher(voucher, visit)
    with pytest.raises(PointsError, match="already used on 2026-06-05"):
        use(session, customer, voucher.code, date(2026, 6, 20))


def test_voucher_lapses_after_the_next_maintenance_visit(session: Session) -> None:
    customer, car = rich_customer(session)
    voucher = redeem(session, customer, kind="accessory", blocks=1, today=date(2026, 6, 1), rules=RULES)
    add_visit(session, car, day=date(2026, 6, 10))  # came for service and forgot the voucher
    with pytest.raises(PointsError, match="next maintenance visit after 2026-06-01, which was on 2026-06-10"):
        use(session, customer, voucher.code, date(2026, 7, 1))


def test_a_voucher_redeemed_on_the_day_of_a_maintenance_visit_is_valid_at_the_next_one(
    session: Session,
) -> None:
    customer, car = rich_customer(session)
    add_visit(session, car, day=date(2026, 6, 1))  # the maintenance visit at whose checkout it was redeemed
    voucher = redeem(session, customer, kind="repair", blocks=1, today=date(2026, 6, 1), rules=RULES)
    assert use(session, customer, voucher.code, date(2026, 9, 1)) is voucher  # the next maintenance visit
    add_visit(session, car, day=date(2026, 8, 1))  # a later one came and went without it
    with pytest.raises(PointsError, match="next maintenance visit after 2026-06-01, which was on 2026-08-01"):
        use(session, customer, voucher.code, date(2026, 9, 1))


def test_a_voucher_tied_to_its_checkout_visit_is_never_used_there(session: Session) -> None:
    customer, car = rich_customer(session)
    second_car = add_vehicle(session, customer, plate="沪B00002")
    checkout = add_visit(session, car, day=date(2026, 6, 1))
    same_day = add_visit(session, second_car, day=date(2026, 6, 1))  # the other car, serviced that day too
    voucher = redeem(
        session, customer, kind="repair", blocks=1, today=date(2026, 6, 1), rules=RULES, at_visit=checkout
    )
    assert voucher.issued_visit_id == checkout.id and voucher.issued_on == date(2026, 6, 1)
    with pytest.raises(PointsError, match="redeemed at this visit's checkout"):
        check_voucher(
            session, voucher.code, VisitForVoucher(customer.id, checkout.date, "maintenance", checkout.id)
        )
    # Which of two visits on one day came first is unknown: another visit that day may use it ...
    assert (
        check_voucher(
            session, voucher.code, VisitForVoucher(customer.id, same_day.date, "maintenance", same_day.id)
        )
        is voucher
    )
    # ... and one that did not never uses up its chance: the next day's visit still may.
    assert use(session, customer, voucher.code, date(2026, 6, 2)) is voucher
    _, other_car = rich_customer(session, "C2")
    elsewhere = add_visit(session, other_car, day=date(2026, 6, 1))
    with pytest.raises(PointsError, match="the visit belongs to another customer"):
        redeem(
            session,
            customer,
            kind="repair",
            blocks=1,
            today=date(2026, 6, 1),
            rules=RULES,
            at_visit=elsewhere,
        )
    with pytest.raises(PointsError, match="the visit is on 2026-06-01, not on the redemption day 2026-06-03"):
        redeem(
            session, customer, kind="repair", blocks=1, today=date(2026, 6, 3), rules=RULES, at_visit=checkout
        )


def test_voucher_statuses_say_used_lapsed_expired_or_unused(session: Session) -> None:
    customer, car = customer_with_car(session)
    from careflow.customers.points import voucher_statuses

    adjust(session, customer, 5000, reason="opening balance", today=date(2025, 12, 1), rules=RULES)
    checkout = add_visit(session, car, day=date(2026, 1, 5))
    at_checkout = redeem(
        session, customer, kind="repair", blocks=1, today=date(2026, 1, 5), rules=RULES, at_visit=checkout
    )
    forgotten = redeem(session, customer, kind="repair", blocks=1, today=date(2026, 1, 1), rules=RULES)
    statuses = voucher_statuses(session, [at_checkout, forgotten], date(2026, 2, 1))
    assert statuses == {
        at_checkout.id: "unused",  # its own checkout visit is not its next maintenance visit
        forgotten.id: "lapsed: not used at the maintenance visit on 2026-01-05",
    }
    from careflow.customers.points import use_voucher

    later = add_visit(session, car, day=date(2026, 3, 1))
    use_voucher(at_checkout, later)
    statuses = voucher_statuses(session, [at_checkout], date(2026, 3, 2))
    assert statuses == {at_checkout.id: "used 2026-03-01"}
    unseen = redeem(session, customer, kind="accessory", blocks=1, today=date(2026, 3, 1), rules=RULES)
    assert voucher_statuses(session, [unseen], date(2026, 12, 1)) == {unseen.id: "expired"}


# --- care occasions ---------------------------------------------------------------------------


def occasions(runtime: Runtime) -> list[tuple[str, str, str]]:
    with runtime.sessions() as s:
        rows = s.execute(
            select(Customer.external_id, CareEvent.occasion, CareEvent.period)
            .join(Customer, Customer.id == CareEvent.customer_id)
            .order_by(CareEvent.id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_threshold_crossing_is_told_once_per_crossing(runtime: Runtime) -> None:
    with runtime.sessions() as s:
        customer, car = customer_with_car(s)
        add_visit(s, car, day=date(2026, 5, 1), amount=6000, kind="repair", points=RULES)  # 600
        s.commit()
    plan(runtime, now=NOW, day=date(2026, 6, 1))
    assert occasions(runtime) == []
    with runtime.sessions() as s:
        car2 = s.get(Vehicle, car.id)
        assert car2 is not None
        crossing = add_visit(s, car2, day=date(2026, 6, 2), amount=5000, kind="repair", points=RULES)  # 1100
        s.commit()
    for day in (2, 3, 4):
        plan(runtime, now=NOW, day=date(2026, 6, day))
    entry_id = _entry_of(runtime, crossing.id)
    assert occasions(runtime) == [("C1", "threshold", str(entry_id))]
    with runtime.sessions() as s:
        car3, c = s.get(Vehicle, car.id), s.get(Customer, customer.id)
        assert car3 is not None and c is not None
        add_visit(
            s, car3, day=date(2026, 6, 5), amount=1000, kind="repair", points=RULES
        )  # 1200, still above
        redeem(s, c, kind="repair", blocks=1, today=date(2026, 6, 6), rules=RULES)  # 200: below again
        s.commit()
    plan(runtime, now=NOW, day=date(2026, 6, 6))
    assert len(occasions(runtime)) == 1
    with runtime.sessions() as s:
        c = s.get(Customer, customer.id)
        assert c is not None
        again = adjust(
            s, c, 900, reason="campaign", today=date(2026, 6, 7), rules=RULES
        )  # 1100: crossed again
        s.commit()
        again_id = again.id
    plan(runtime, now=NOW, day=date(2026, 6, 7))
    assert occasions(runtime)[-1] == ("C1", "threshold", str(again_id))


def _entry_of(runtime: Runtime, visit_id: int) -> int:
    with runtime.sessions() as s:
        found = s.scalar(select(PointsEntry.id).where(PointsEntry.visit_id == visit_id))
        assert found is not None
        return found


def test_points_expiring_within_30_days_are_told_once(runtime: Runtime) -> None:
    with runtime.sessions() as s:
        _, car = customer_with_car(s)
        add_visit(s, car, day=date(2024, 7, 15), amount=800, points=RULES)  # 80 points, expire 2026-07-15
        s.commit()
    plan(runtime, now=NOW, day=date(2026, 6, 14))  # 31 days before
    assert occasions(runtime) == []
    for day in (15, 16, 30):
        plan(runtime, now=NOW, day=date(2026, 6, day))
    assert occasions(runtime) == [("C1", "points-expiring", "2026-07-15")]
    plan(runtime, now=NOW, day=date(2026, 7, 15))  # expired now: nothing more
    assert len(occasions(runtime)) == 1


def test_voucher_expiring_within_14_days_unused_is_told_once(runtime: Runtime) -> None:
    with runtime.sessions() as s:
        customer, _ = rich_customer(s, points=1000, earned=date(2025, 12, 1))
        other, other_car = rich_customer(s, "C2", points=1000, earned=date(2025, 12, 1))
        voucher = redeem(s, customer, kind="repair", blocks=1, today=date(2026, 1, 1), rules=RULES)
        lapsed = redeem(s, other, kind="repair", blocks=1, today=date(2026, 1, 1), rules=RULES)
        add_visit(s, other_car, day=date(2026, 2, 1))  # C2's next maintenance came and went
        s.commit()
    assert voucher.expires_on == date(2026, 6, 30)
    plan(runtime, now=NOW, day=date(2026, 6, 15))  # 15 days before
    plan(runtime, now=NOW, day=date(2026, 6, 16))
    plan(runtime, now=NOW, day=date(2026, 6, 20))
    assert occasions(runtime) == [("C1", "voucher-expiring", voucher.code)]
    assert lapsed.code not in {p for _, _, p in occasions(runtime)}


def test_a_voucher_redeemed_at_a_maintenance_checkout_is_reminded_before_it_expires(runtime: Runtime) -> None:
    with runtime.sessions() as s:
        customer, car = rich_customer(s, points=1000, earned=date(2025, 12, 1))
        add_visit(s, car, day=date(2026, 1, 1))  # redeemed at this visit's checkout, said by date only
        untied = redeem(s, customer, kind="accessory", blocks=1, today=date(2026, 1, 1), rules=RULES)
        s.commit()
    assert untied.expires_on == date(2026, 6, 30)
    plan(runtime, now=NOW, day=date(2026, 6, 20))  # unused, and no maintenance visit since
    assert occasions(runtime) == [("C1", "voucher-expiring", untied.code)]
    with runtime.sessions() as s:
        other, other_car = rich_customer(s, "C2", points=1000, earned=date(2025, 12, 1))
        checkout = add_visit(s, other_car, day=date(2026, 1, 2))
        tied = redeem(
            s, other, kind="repair", blocks=1, today=date(2026, 1, 2), rules=RULES, at_visit=checkout
        )
        s.commit()
    plan(runtime, now=NOW, day=date(2026, 6, 21))  # tied to its checkout visit: reminded too
    assert occasions(runtime)[-1] == ("C2", "voucher-expiring", tied.code)


def test_customers_below_every_threshold_are_never_loaded(runtime: Runtime) -> None:
    with runtime.sessions() as s:
        rich, _ = rich_customer(s, "RICH", points=1500)
        poor, _ = rich_customer(s, "POOR", points=300)
        s.commit()
        rich_id, poor_id = rich.id, poor.id
    loaded: set[int] = set()

    def on_load(target: Customer, _ctx: Any) -> None:
        loaded.add(target.id)

    event.listen(Customer, "load", on_load)
    try:
        plan(runtime, now=NOW, day=date(2026, 6, 1))
    finally:
        event.remove(Customer, "load", on_load)
    assert rich_id in loaded and poor_id not in loaded


def test_messages_render_in_both_locales(runtime: Runtime) -> None:
    with runtime.sessions() as s:
        zh, _ = rich_customer(s, "ZH", points=1500)
        zh.locale, zh.name = "zh_CN", "王伟"
        en, _ = rich_customer(s, "EN", points=2100)
        redeem(s, en, kind="accessory", blocks=1, today=date(2026, 1, 15), rules=RULES)  # expires 2026-07-14
        s.commit()
    run_day(runtime, now=NOW, day=date(2026, 7, 1))
    with runtime.sessions() as s:
        rows = s.execute(
            select(Customer.external_id, CareEvent.occasion, CareEvent.body, CareEvent.status).join(
                Customer, Customer.id == CareEvent.customer_id
            )
        ).all()
    bodies = {(c, o): b for c, o, b, _ in rows}
    assert {st for _, _, _, st in rows} == {"sent"}
    assert "1,500" in bodies[("ZH", "threshold")] and "代金券" in bodies[("ZH", "threshold")]
    assert bodies[("ZH", "threshold")].endswith("回T退订")  # marketing: the opt-out footer
    assert "1,100 points" in bodies[("EN", "threshold")]
    expiring = bodies[("EN", "voucher-expiring")]
    assert "accessory voucher V-" in expiring and "July 14, 2026" in expiring and "Reply STOP" in expiring
