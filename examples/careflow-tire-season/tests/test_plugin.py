"""The tire-season plugin end to end through careflow's test kit (installed through its entry point)."""

from __future__ import annotations

from datetime import date

import pytest
from careflow import ConfigError
from careflow.testing import Factories, FrozenClock, Runtime, RuntimeFactory, run_care_day

CENTERS = {
    "harbin": {"name": "冰城汽车服务", "timezone": "Asia/Harbin", "locale": "zh_CN"},
    "oslo": {"name": "Fjord Bilservice", "timezone": "Europe/Oslo", "locale": "en"},
    "nz": {"name": "Southern Alps Motors", "timezone": "Pacific/Auckland", "locale": "en"},
}


@pytest.fixture
def runtime(careflow_make_runtime: RuntimeFactory) -> Runtime:
    return careflow_make_runtime(plugins={"tire_season": {"days_before": 14}}, centers=CENTERS)


@pytest.mark.careflow_now("2026-09-20 09:00", tz="Asia/Harbin")
def test_winter_tires_before_the_first_frost_in_a_severe_climate(
    runtime: Runtime, careflow_factories: Factories, careflow_clock: FrozenClock
) -> None:
    careflow_factories.customer("zhang", name="张伟", city="哈尔滨", center="harbin")
    careflow_factories.customer("nils", name="Nils", city="Oslo", center="oslo")  # cold: Oct 20, not yet
    careflow_factories.customer("li", name="李娜", city="Shanghai", center="harbin")  # no winter tires

    sent = run_care_day(runtime, now=careflow_clock.now, plugins=["tire_season"])

    assert [(m.customer, m.context["season"], m.context["change_by"]) for m in sent] == [
        ("zhang", "winter", "2026-10-01")
    ]
    assert sent[0].body == (
        "【冰城汽车服务】张伟您好，哈尔滨即将降霜入冬，建议您在2026年10月1日前换装冬季轮胎，"
        "冰雪路面制动更安全。回复本短信即可预约。"
    )
    assert run_care_day(runtime, now=careflow_clock.now) == []  # once per season change
    careflow_clock.advance(days=7)
    assert run_care_day(runtime, now=careflow_clock.now) == []  # still the same change


@pytest.mark.careflow_now("2026-09-25 09:00", tz="Pacific/Auckland")
def test_the_southern_hemisphere_changes_to_summer_tires_in_spring(
    runtime: Runtime, careflow_factories: Factories, careflow_clock: FrozenClock
) -> None:
    careflow_factories.customer("kiri", name="Kiri", city="christchurch", center="nz")

    [message] = run_care_day(runtime, now=careflow_clock.now)

    assert (message.context["season"], message.context["change_by"]) == ("summer", "2026-10-01")
    assert message.body.startswith("Southern Alps Motors: Hi Kiri, spring has reached christchurch.")
    assert "by October 1, 2026" in message.body


def test_the_city_table_is_configurable(
    careflow_make_runtime: RuntimeFactory, careflow_factories: Factories
) -> None:
    runtime = careflow_make_runtime(
        plugins={
            "tire_season": {
                "days_before": 3,
                "climates": {"alpine": {"winter_tires_from": "09-15", "summer_tires_from": "05-15"}},
                "cities": {"Davos": "alpine"},
            }
        },
        centers=CENTERS,
    )
    careflow_factories.customer("anna", name="Anna", city="Davos", center="oslo")
    careflow_factories.customer("zhang", city="哈尔滨", center="harbin")  # not in the new table

    sent = run_care_day(runtime, now=FrozenClock("2026-09-13 12:00", tz="Europe/Zurich").now)

    assert [(m.customer, m.context["climate"], m.due_date) for m in sent] == [
        ("anna", "alpine", date(2026, 9, 13))
    ]


def test_a_city_with_an_undefined_climate_stops_careflow_at_start_up(
    careflow_make_runtime: RuntimeFactory,
) -> None:
    with pytest.raises(
        ConfigError, match=r"\[plugins\.tire_season\]: .*cities\.Davos: climate 'alpine' is not defined"
    ):
        careflow_make_runtime(plugins={"tire_season": {"cities": {"Davos": "alpine"}}})
