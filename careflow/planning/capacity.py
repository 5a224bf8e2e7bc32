"""Capacity pacing: spread reminders over the days before they are due so bookings fit the shop.

Pure and deterministic: the same vehicles, reservations and day always give the same plan.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True)
class PacedItem:
    """One reminder still to send: ``natural`` is the day it would go out without pacing."""

    natural: date
    item_id: int


def pace_to_capacity(
    items: Iterable[PacedItem],
    *,
    today: date,
    capacity: int,
    max_advance_days: int,
    reserved: Mapping[date, int] | None = None,
) -> dict[int, date]:
    """The day each reminder goes out: at most ``capacity`` a day, never after its natural day.

    Reminders already sent occupy ``reserved`` (today's count), days before ``today`` are
    gone. Reminders whose natural day has come are sent today whatever the load: nobody is
    dropped. The rest are placed latest-first (latest natural day first, ties by id) on the
    latest day with room, at most ``max_advance_days`` early, so the earliest due are
    reminded earliest. When no day in that range has room the reminder keeps its natural day.
    """
    counts: Counter[date] = Counter(reserved or {})
    plan: dict[int, date] = {}
    pending = sorted(items, key=lambda i: (i.natural, i.item_id), reverse=True)
    for item in [i for i in pending if i.natural <= today]:
        plan[item.item_id] = today
        counts[today] += 1
    for item in [i for i in pending if i.natural > today]:
        floor = max(today, item.natural - timedelta(days=max_advance_days))
        chosen = item.natural
        day = item.natural
        while day >= floor:
            if counts[day] < capacity:
                chosen = day
                break
            day -= timedelta(days=1)
        plan[item.item_id] = chosen
        counts[chosen] += 1
    return plan
