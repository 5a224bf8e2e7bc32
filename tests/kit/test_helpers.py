"""The plugin-author test kit itself: clock, factories, capturing channel, run_care_day."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

import pytest
from sqlalchemy import select

from careflow.care import CarePlugin, Occasion, PlanContext, Purpose
from careflow.hookspecs import hookimpl
from careflow.service.care_run import run_day
from careflow.storage.models import Customer, ServiceVisit, Vehicle
from careflow.testing import CapturingProvider, CareRunFailed, Factories, FrozenClock, run_care_day
from careflow.testing.fixtures import RuntimeFactory


class EveryoneToday(CarePlugin):
    """A care plugin for tests: every customer in the batch is due today."""

    name = "everyone"
    purpose = Purpose.SERVICE
    variables: ClassVar[Mapping[str, str]] = {"n": "a number, for the test"}

    def __init__(self, template: str = "everyone") -> None:
        self.template = template

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        for customer in ctx.session.scalars(select(Customer).where(ctx.in_batch())):
            today = ctx.local_today(customer)
            yield Occasion(customer, "hello", today.isoformat(), today, {"n": 1}, template=self.template)


class Templates:
    def __init__(self, root: Path) -> None:
        self.root = root

    @hookimpl
    def careflow_template_dirs(self) -> list[Path]:
        return [self.root]


@pytest.fixture
def templates(tmp_path: Path) -> Templates:
    (tmp_path / "tpl" / "everyone").mkdir(parents=True)
    (tmp_path / "tpl" / "everyone" / "sms.en.j2").write_text("Hi {{ customer.name }}, n={{ n }}", "utf-8")
    (tmp_path / "tpl" / "broken").mkdir()
    (tmp_path / "tpl" / "broken" / "sms.en.j2").write_text("Hi {{ nobody_defined_this }}", "utf-8")
    return Templates(tmp_path / "tpl")


# --- clock ------------------------------------------------------------------------------------


def test_clock_reads_naive_times_in_its_zone_and_shows_any_other() -> None:
    clock = FrozenClock("2026-12-01 08:00", tz="Europe/Oslo")

    assert clock.now.isoformat() == "2026-12-01T08:00:00+01:00"
    assert clock.local("Asia/Shanghai").isoformat() == "2026-12-01T15:00:00+08:00"
    assert clock.today("America/Los_Angeles") == date(2026, 11, 30)
    clock.advance(days=1, hours=1)
    assert clock.now.isoformat() == "2026-12-02T09:00:00+01:00"
    clock.set("2026-06-01T00:30:00+00:00")
    assert clock.now.isoformat() == "2026-06-01T02:30:00+02:00"  # summer time in Oslo
    with pytest.raises(ValueError):
        clock.set("not a time")


@pytest.mark.careflow_now("2026-03-01 23:59", tz="Pacific/Auckland")
def test_clock_fixture_starts_where_the_marker_says(careflow_clock: FrozenClock) -> None:
    assert careflow_clock.now == datetime.fromisoformat("2026-03-01T23:59:00+13:00")
    assert careflow_clock.today("UTC") == date(2026, 3, 1)


def test_clock_fixture_defaults_to_a_fixed_morning_in_shanghai(careflow_clock: FrozenClock) -> None:
    assert careflow_clock.now.isoformat() == "2026-05-11T09:00:00+08:00"


# --- factories --------------------------------------------------------------------------------


def test_factories_write_customers_vehicles_and_visits(
    careflow_make_runtime: RuntimeFactory, careflow_factories: Factories
) -> None:
    runtime = careflow_make_runtime()
    first = careflow_factories.customer(birthday="02-29", city="Harbin")
    second = careflow_factories.customer("vip", name="王伟", phone=None, email="w@example.com")
    car = careflow_factories.vehicle(first, plate="黑A12345", interval_km=7_500)
    careflow_factories.visit(first, vehicle=car, on=date(2026, 4, 2), mileage=30_500, amount="880.50")

    with runtime.sessions() as session:
        stored = {c.external_id: c for c in session.scalars(select(Customer))}
        assert stored["C0001"].birthday == (2, 29) and stored["C0001"].city == "Harbin"
        assert stored["vip"].phone is None and stored["vip"].name == "王伟"
        assert first.center.code == "main"  # loaded: usable outside its session
        vehicle = session.scalars(select(Vehicle)).one()
        visit = session.scalars(select(ServiceVisit)).one()
    assert (vehicle.plate, vehicle.customer_id, vehicle.interval_km) == ("黑A12345", first.id, 7_500)
    assert (visit.vehicle_id, visit.mileage, visit.amount) == (car.id, 30_500, Decimal("880.50"))
    assert second.id != first.id


def test_factories_need_a_center_from_a_runtime_first(careflow_factories: Factories) -> None:
    with pytest.raises(LookupError, match="no center"):
        careflow_factories.customer()


# --- capturing channel and run_care_day -------------------------------------------------------


def test_capturing_provider_records_what_the_worker_sends(
    careflow_make_runtime: RuntimeFactory,
    careflow_factories: Factories,
    careflow_capture: CapturingProvider,
    careflow_clock: FrozenClock,
    templates: Templates,
) -> None:
    runtime = careflow_make_runtime(
        plugins=["everyone"],
        extra_plugins=[_provides(EveryoneToday()), templates, careflow_capture],
        channels={"sms": {"provider": "capture"}},
        centers={"main": {"name": "Test Motors", "timezone": "UTC", "locale": "en"}},
    )
    careflow_factories.customer("a", name="Ann", phone="+8613900000001")

    run_day(runtime, now=careflow_clock.now)

    [message] = careflow_capture.messages
    assert (message.channel, message.to, message.body) == ("sms", "+8613900000001", "Hi Ann, n=1")


def test_run_care_day_returns_messages_with_their_events(
    careflow_make_runtime: RuntimeFactory,
    careflow_factories: Factories,
    careflow_clock: FrozenClock,
    templates: Templates,
) -> None:
    runtime = careflow_make_runtime(extra_plugins=[templates], centers={"main": {"locale": "en"}})
    ann = careflow_factories.customer("a", name="Ann")
    careflow_factories.customer("b", name="Bob", sms_consent=False)

    sent = run_care_day(runtime, now=careflow_clock.now, plugins=[EveryoneToday()])

    assert len(sent) == 1
    message = sent[0]
    assert (message.plugin, message.customer, message.body) == ("everyone", "a", "Hi Ann, n=1")
    assert message.key == f"everyone:hello:2026-05-11:{ann.id}"
    assert (message.template, message.locale, message.due_date) == ("everyone", "en", date(2026, 5, 11))
    assert message.context == {"n": 1}
    # The outbox remembers: the same day again sends nothing, the next day sends again.
    assert run_care_day(runtime, now=careflow_clock.now, plugins=[EveryoneToday()]) == []
    tomorrow = careflow_clock.now + timedelta(days=1)
    assert len(run_care_day(runtime, now=tomorrow, plugins=[EveryoneToday()])) == 1


def test_run_care_day_raises_on_a_plugin_failure_or_a_template_error(
    careflow_make_runtime: RuntimeFactory,
    careflow_factories: Factories,
    careflow_clock: FrozenClock,
    templates: Templates,
) -> None:
    runtime = careflow_make_runtime(extra_plugins=[templates], centers={"main": {"locale": "en"}})
    careflow_factories.customer("a")

    with pytest.raises(CareRunFailed, match=r"plugin broken failed \(customers 1-1, customer a\): KeyError"):
        run_care_day(runtime, now=careflow_clock.now, plugins=[Raises()])
    with pytest.raises(CareRunFailed, match=r"broken/sms\.en\.j2 line 1: undefined.variable") as failed:
        run_care_day(runtime, now=careflow_clock.now, plugins=[EveryoneToday(template="broken")])
    assert failed.value.report.new == 1
    quiet = run_care_day(runtime, now=careflow_clock.now, plugins=[Raises()], raise_on_failure=False)
    assert quiet == []


class Raises(CarePlugin):
    name = "broken"

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        for customer in ctx.session.scalars(select(Customer).where(ctx.in_batch())):
            yield from {}[customer.external_id]


def _provides(*plugins: CarePlugin) -> object:
    class Provides:
        @hookimpl
        def careflow_care_plugins(self) -> list[CarePlugin]:
            return list(plugins)

    return Provides()
