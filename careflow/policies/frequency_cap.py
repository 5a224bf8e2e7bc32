"""Frequency cap: at most N care messages per customer in a rolling window, highest priority first."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from careflow.config import CenterSettings
from careflow.policies.rows import Decision
from careflow.storage.models import CareEvent, EventStatus

# Statuses that mean "the customer got, or is about to get, a message": they use up the cap.
COUNTED = (
    EventStatus.PLANNED,
    EventStatus.DEFERRED,
    EventStatus.SENDING,
    EventStatus.SENT,
    EventStatus.DELIVERED,
)


@dataclass(frozen=True)
class Cap:
    limit: int  # 0: no cap
    days: int

    @classmethod
    def of(cls, center: CenterSettings | None) -> Cap:
        center = center or CenterSettings()
        return cls(center.frequency_cap, center.frequency_window_days)


def already_counted(
    session: Session, customer_ids: Iterable[int], *, day: date, days: int, exclude_keys: set[str]
) -> dict[int, int]:
    """Events per customer in the window ending on ``day`` that use up the cap."""
    ids = sorted(set(customer_ids))
    counts: dict[int, int] = {}
    for start in range(0, len(ids), 5_000):
        chunk = ids[start : start + 5_000]
        query = (
            select(CareEvent.customer_id, func.count())
            .where(
                CareEvent.customer_id.in_(chunk),
                CareEvent.status.in_([str(s) for s in COUNTED]),
                CareEvent.due_date > day - timedelta(days=days),
                CareEvent.due_date <= day,
            )
            .group_by(CareEvent.customer_id)
        )
        if exclude_keys:
            query = query.where(CareEvent.idempotency_key.not_in(sorted(exclude_keys)))
        counts.update({customer_id: int(n) for customer_id, n in session.execute(query)})
    return counts


class Contender(Protocol):
    """What the cap reads of an event: a ``PlannedRow`` at planning, a failed event being retried."""

    @property
    def idempotency_key(self) -> str: ...
    @property
    def customer_id(self) -> int: ...
    @property
    def center_id(self) -> int: ...
    @property
    def plugin(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def due_date(self) -> date: ...
    @property
    def status(self) -> EventStatus: ...


def cap_decisions(
    session: Session,
    rows: Sequence[Contender],
    *,
    cap_for: Callable[[int], Cap],
    existing_keys: set[str],
) -> dict[str, Decision]:
    """The lowest-priority new events of customers over their cap, each decided ``suppressed`` with why.

    ``rows`` are events about to be recorded (or retried); ``existing_keys`` those already in
    the outbox (re-runs insert nothing for them, so they neither compete nor count twice).
    Returns a decision per suppressed event, by idempotency key; the others may go.
    """
    contenders: dict[int, list[Contender]] = defaultdict(list)
    for row in rows:
        if row.status in (EventStatus.PLANNED, EventStatus.DEFERRED) and (
            row.idempotency_key not in existing_keys
        ):
            contenders[row.customer_id].append(row)
    by_window: dict[tuple[date, int], list[int]] = defaultdict(list)
    for customer_id, mine in contenders.items():
        cap = cap_for(mine[0].center_id)
        if cap.limit:
            by_window[(max(r.due_date for r in mine), cap.days)].append(customer_id)
    suppressed: dict[str, Decision] = {}
    for (day, days), customer_ids in by_window.items():
        counted = already_counted(session, customer_ids, day=day, days=days, exclude_keys=existing_keys)
        for customer_id in customer_ids:
            mine = contenders[customer_id]
            cap = cap_for(mine[0].center_id)
            used = counted.get(customer_id, 0)
            mine.sort(key=lambda r: (-r.priority, r.plugin, r.idempotency_key))
            allowed = max(cap.limit - used, 0)
            winners = mine[:allowed]
            for row in mine[allowed:]:
                suppressed[row.idempotency_key] = Decision(
                    EventStatus.SUPPRESSED, _reason(cap, used, winners, row)
                )
    return suppressed


def _reason(cap: Cap, used: int, winners: list[Contender], row: Contender) -> str:
    reason = (
        f"frequency cap: at most {cap.limit} care message(s) per {cap.days} days; "
        f"{used} already recorded in the window"
    )
    if winners:
        names = ", ".join(f"{w.plugin} (priority {w.priority})" for w in winners)
        reason += f"; gave way to {names} (this: {row.plugin}, priority {row.priority})"
    return reason
