"""Season-change dates by climate and hemisphere."""

from __future__ import annotations

from datetime import date

import pytest

from careflow_tire_season.climate import Change, MonthDay, changes_due

COLD = {"winter": MonthDay(10, 20), "summer": MonthDay(4, 10)}


def test_month_days_are_checked() -> None:
    assert MonthDay.parse("10-15") == MonthDay(10, 15)
    for bad in ("02-29", "13-01", "10", "ten-15"):
        with pytest.raises(ValueError, match="is not a month-day"):
            MonthDay.parse(bad)


def test_the_southern_hemisphere_is_six_months_later() -> None:
    assert MonthDay(10, 20).in_hemisphere("south") == MonthDay(4, 20)
    assert MonthDay(4, 10).in_hemisphere("south") == MonthDay(10, 10)
    assert MonthDay(8, 31).in_hemisphere("south") == MonthDay(2, 28)  # clipped to the month
    assert MonthDay(3, 5).in_hemisphere("north") == MonthDay(3, 5)


def test_a_change_is_due_within_the_window_before_its_date() -> None:
    assert changes_due(COLD, "north", date(2026, 10, 5), 14) == []
    assert changes_due(COLD, "north", date(2026, 10, 6), 14) == [Change("winter", date(2026, 10, 20))]
    assert changes_due(COLD, "north", date(2026, 10, 20), 14) == [Change("winter", date(2026, 10, 20))]
    assert changes_due(COLD, "north", date(2026, 10, 21), 14) == []
    assert changes_due(COLD, "south", date(2026, 4, 10), 14) == [Change("winter", date(2026, 4, 20))]
    assert changes_due(COLD, "north", date(2026, 12, 30), 120) == [Change("summer", date(2027, 4, 10))]
