"""When a vehicle's next service is due: by time or by estimated mileage, whichever comes first."""

from __future__ import annotations

import calendar
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

MAINTENANCE = "maintenance"
VISIT_KINDS = ("maintenance", "repair", "inspection", "other")


def add_months(day: date, months: int) -> date:
    """``day`` plus whole months, clamped to the month's end (Jan 31 + 1 month = Feb 28 or 29)."""
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


@dataclass(frozen=True)
class VisitFact:
    """What the due logic needs from one service visit."""

    date: date
    mileage: int | None
    kind: str


@dataclass(frozen=True)
class ServiceDue:
    """The next service of one vehicle and why it falls then."""

    due: date
    reason: str  # "time" or "mileage"
    cycle_start: date  # the last maintenance visit (or the purchase date): a new one starts a new cycle
    km_per_day: float | None


def km_per_day(visits: Iterable[VisitFact], purchase_date: date | None) -> float | None:
    """Average daily distance from the visit history, or None when it cannot be estimated.

    Uses the first and last visits that recorded a mileage. With a single reading the car is
    assumed to have left the shop new (0 km) on its purchase date; without one, no estimate.
    """
    readings = sorted((v.date, v.mileage) for v in visits if v.mileage is not None)
    if not readings:
        return None
    (first_day, first_km), (last_day, last_km) = readings[0], readings[-1]
    if last_day > first_day and last_km > first_km:
        return (last_km - first_km) / (last_day - first_day).days
    if purchase_date is not None and last_day > purchase_date and last_km > 0:
        return last_km / (last_day - purchase_date).days
    return None


def next_service(
    visits: Iterable[VisitFact],
    *,
    purchase_date: date | None,
    interval_months: int | None,
    interval_km: int | None,
) -> ServiceDue | None:
    """The next service date, or None when there is no interval or nothing to count from."""
    history = list(visits)
    maintenance = [v for v in history if v.kind == MAINTENANCE]
    last = max(maintenance, key=lambda v: v.date, default=None)
    if last is not None:
        start, start_km = last.date, last.mileage
    elif purchase_date is not None:
        start, start_km = purchase_date, 0  # the first service counts from a new car
    else:
        return None
    rate = km_per_day(history, purchase_date)
    candidates: list[tuple[date, str]] = []
    if interval_months:
        candidates.append((add_months(start, interval_months), "time"))
    if interval_km and rate and start_km is not None:
        candidates.append((_mileage_due(history, start, start_km, start_km + interval_km, rate), "mileage"))
    if not candidates:
        return None
    # On a tie, "time" is the clearer reason to give a customer.
    due, reason = min(candidates, key=lambda c: (c[0], c[1] != "time"))
    return ServiceDue(due=due, reason=reason, cycle_start=start, km_per_day=rate)


def _mileage_due(history: list[VisitFact], start: date, start_km: int, target_km: int, rate: float) -> date:
    """The day the estimated odometer reaches ``target_km``, projected from the latest reading."""
    readings = [(v.date, v.mileage) for v in history if v.mileage is not None and v.date >= start]
    anchor_day, anchor_km = max(readings, default=(start, start_km), key=lambda r: r[0])
    left = target_km - anchor_km
    if left <= 0:
        return anchor_day
    return anchor_day + timedelta(days=math.ceil(left / rate))
