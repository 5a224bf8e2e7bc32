"""The birthday plugin through the plugin-author kit: the same fixtures a third-party plugin uses."""

from __future__ import annotations

import pytest

from careflow.runtime import Runtime
from careflow.testing import Factories, FrozenClock, run_care_day
from careflow.testing.fixtures import RuntimeFactory

CENTERS = {
    "sh": {"name": "浦东汽车服务中心", "timezone": "Asia/Shanghai", "locale": "zh_CN"},
    "la": {"name": "Sunset Motors", "timezone": "America/Los_Angeles", "locale": "en"},
}


@pytest.fixture
def runtime(careflow_make_runtime: RuntimeFactory) -> Runtime:
    return careflow_make_runtime(plugins=["birthday"], centers=CENTERS)


@pytest.mark.careflow_now("2026-05-11 09:00", tz="Asia/Shanghai")
def test_greets_in_the_customers_language_on_the_local_birthday(
    runtime: Runtime, careflow_factories: Factories, careflow_clock: FrozenClock
) -> None:
    careflow_factories.customer("wang", name="王伟", birthday="1986-05-11", center="sh")
    careflow_factories.customer("emma", name="Emma Clarke", birthday="05-11", center="la")
    careflow_factories.customer("late", name="Li Na", birthday="1990-05-12", center="sh")

    sent = run_care_day(runtime, now=careflow_clock.now)

    # 09:00 in Shanghai is still May 10 in Los Angeles: only Wang's birthday has begun.
    assert [(m.customer, m.plugin) for m in sent] == [("wang", "birthday")]
    assert "王伟" in sent[0].body and "40岁生日" in sent[0].body
    assert sent[0].body.endswith("回T退订")  # marketing SMS carry the opt-out footer

    careflow_clock.advance(hours=12)  # 21:00 in Shanghai = 06:00 on May 11 in Los Angeles
    later = run_care_day(runtime, now=careflow_clock.now)
    assert [m.customer for m in later] == ["emma"]
    assert later[0].body.startswith("Sunset Motors: Happy birthday, Emma Clarke!")
    assert later[0].body.endswith("Reply STOP to opt out")


@pytest.mark.careflow_now("2027-02-28 10:00", tz="Asia/Shanghai")
def test_leap_day_birthday_is_greeted_once_on_feb_28_in_a_common_year(
    runtime: Runtime, careflow_factories: Factories, careflow_clock: FrozenClock
) -> None:
    careflow_factories.customer("leap", birthday="2000-02-29", locale="en", center="sh")

    first = run_care_day(runtime, now=careflow_clock.now)
    again = run_care_day(runtime, now=careflow_clock.now)
    careflow_clock.advance(days=1)
    next_day = run_care_day(runtime, now=careflow_clock.now)

    assert [(m.customer, m.due_date.isoformat(), m.key.split(":")[2]) for m in first] == [
        ("leap", "2027-02-28", "2027")
    ]
    assert again == [] and next_day == []  # never twice


def test_no_consent_means_no_message(
    runtime: Runtime, careflow_factories: Factories, careflow_clock: FrozenClock
) -> None:
    careflow_factories.customer("quiet", birthday=careflow_clock.today(), sms_consent=False, center="sh")

    assert run_care_day(runtime, now=careflow_clock.now) == []


def test_plugins_argument_limits_the_run_to_the_named_plugins(
    careflow_make_runtime: RuntimeFactory, careflow_factories: Factories, careflow_clock: FrozenClock
) -> None:
    runtime = careflow_make_runtime(centers=CENTERS)  # birthday installed but not enabled
    careflow_factories.customer("wang", birthday=careflow_clock.today(), center="sh")

    assert run_care_day(runtime, now=careflow_clock.now, plugins=[]) == []
    assert [m.customer for m in run_care_day(runtime, now=careflow_clock.now, plugins=["birthday"])] == [
        "wang"
    ]
    with pytest.raises(LookupError, match="no_such_plugin not found; installed: birthday"):
        run_care_day(runtime, now=careflow_clock.now, plugins=["no_such_plugin"])
