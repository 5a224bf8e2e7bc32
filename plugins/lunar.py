"""Chinese lunar calendar arithmetic (via borax) for lunar holidays and lunar birthdays.

Conventions, as most families keep them:
- a lunar birthday is celebrated in the regular (non-leap) month of its number every year;
  a leap month never holds a birthday greeting, and someone born in a leap month is greeted
  in the regular month of the same number;
- a birthday on the 30th is greeted on the 29th in years whose month has only 29 days.
"""

from __future__ import annotations

from datetime import date

from borax.calendars.lunardate import LCalendars, LunarDate


def lunar_to_solar(lunar_year: int, month: int, day: int) -> date:
    """The solar date of a regular-month lunar date (day 30 falls back to 29 in a short month)."""
    last = LCalendars.ndays(lunar_year, month, 0)
    solar: date = LunarDate(lunar_year, month, min(day, last), 0).to_solar_date()
    return solar


def lunar_of(day: date) -> tuple[int, int, int, bool]:
    """(lunar year, month, day, is leap month) of a solar date."""
    found = LunarDate.from_solar(day)
    return int(found.year), int(found.month), int(found.day), bool(found.leap)


def lunar_birthdays_on(day: date) -> tuple[int, set[tuple[int, int]]]:
    """The lunar year and the (month, day) lunar birthdays greeted on solar ``day``."""
    year, month, lday, leap = lunar_of(day)
    if leap:
        return year, set()
    found = {(month, lday)}
    if lday == 29 and LCalendars.ndays(year, month, 0) == 29:
        found.add((month, 30))
    return year, found
