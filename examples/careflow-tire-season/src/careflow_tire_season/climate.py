"""When tires should change, by climate and hemisphere: plain date arithmetic, no careflow needed."""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Literal

Hemisphere = Literal["north", "south"]
Season = Literal["winter", "summer"]
SEASONS: tuple[Season, ...] = ("winter", "summer")


@dataclass(frozen=True)
class MonthDay:
    month: int
    day: int

    @classmethod
    def parse(cls, text: str) -> MonthDay:
        """``"10-15"`` -> October 15th (any year; Feb 29 is not allowed)."""
        try:
            month, day = (int(part) for part in text.split("-"))
            date(2001, month, day)  # a common year: rejects 02-29 and 04-31
        except ValueError:
            raise ValueError(f"{text!r} is not a month-day such as '10-15'") from None
        return cls(month, day)

    def in_hemisphere(self, hemisphere: Hemisphere) -> MonthDay:
        """The same point of the seasons in ``hemisphere``: six months later in the south."""
        if hemisphere == "north":
            return self
        month = (self.month + 5) % 12 + 1
        return MonthDay(month, min(self.day, calendar.monthrange(2001, month)[1]))

    def next_on_or_after(self, day: date) -> date:
        """The first date with this month and day, on or after ``day``."""
        this_year = date(day.year, self.month, self.day)
        return this_year if this_year >= day else date(day.year + 1, self.month, self.day)


@dataclass(frozen=True)
class Change:
    """A tire change that is due soon: which season's tires, and the day to have them on by."""

    season: Season
    change_by: date


def changes_due(
    changes: dict[Season, MonthDay], hemisphere: Hemisphere, today: date, days_before: int
) -> list[Change]:
    """The changes whose date is ``days_before`` days away or less (today included)."""
    due = []
    for season in SEASONS:
        change_by = changes[season].in_hemisphere(hemisphere).next_on_or_after(today)
        if (change_by - today).days <= days_before:
            due.append(Change(season, change_by))
    return due


def any_due(
    changes: dict[Season, MonthDay], hemisphere: Hemisphere, days: Iterable[date], days_before: int
) -> bool:
    """Whether a change is due on any of ``days`` (to skip the database outside the windows)."""
    return any(changes_due(changes, hemisphere, day, days_before) for day in days)
