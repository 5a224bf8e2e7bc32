"""Calendar steps over a customer's history, kept apart from segments: plugins use them too."""

from __future__ import annotations

from datetime import date


def months_before(day: date, months: int) -> date:
    """The same day ``months`` earlier, clamped to the month's end (May 31 - 3 months = Feb 28/29)."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    last = [31, 29 if _leap(year) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    return date(year, month, min(day.day, last))


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
