"""Quiet hours: care messages go out only inside the center's sending window, in the customer's time zone.

An event due outside the window is stored as ``deferred`` with ``not_before`` (UTC) -- in the
database, not as a broker delay, so it survives restarts and broker loss -- and is released
(back to ``planned`` and queued) by ``release_deferred`` once the window has opened.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from careflow.config import CenterSettings
from careflow.storage.models import CareEvent, Center, Customer, EventStatus

if TYPE_CHECKING:
    from careflow.runtime import Runtime

log = logging.getLogger(__name__)

_DAY_MINUTES = 24 * 60


def _minutes(text: str) -> int:
    hours, _, minutes = text.partition(":")
    return int(hours) * 60 + int(minutes)


@dataclass(frozen=True)
class SendWindow:
    """Local minutes of the day when sending is allowed: [start, end), possibly across midnight."""

    start: int
    end: int

    @classmethod
    def of(cls, center: CenterSettings | None) -> SendWindow:
        center = center or CenterSettings()
        return cls(_minutes(center.send_from), _minutes(center.send_until))

    def __str__(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"

    def allows(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end  # a window across midnight

    def deferral(self, opening: datetime, tz: ZoneInfo) -> str:
        """The reason recorded on an event deferred to ``opening``."""
        return f"quiet hours ({self} {tz.key}): deferred until {opening.astimezone(tz).isoformat()}"

    def next_opening(self, now: datetime, tz: ZoneInfo) -> datetime | None:
        """None when ``now`` is inside the window; otherwise the UTC instant it next opens."""
        local = now.astimezone(tz)
        if self.allows(local):
            return None
        opening = time(self.start // 60, self.start % 60) if self.start < _DAY_MINUTES else time(0)
        day = local.date()
        candidate = datetime.combine(day, opening, tzinfo=tz)
        if candidate <= local:
            candidate = datetime.combine(day + timedelta(days=1), opening, tzinfo=tz)
        return candidate.astimezone(UTC)


def release_deferred(
    runtime: Runtime, now: datetime, *, enqueue: Callable[[Sequence[int]], None] | None = None
) -> list[int]:
    """Expire deferred events that are no longer relevant, release the due ones; returns released ids.

    An event is released only while its customer's window is open: one whose ``not_before``
    passed while nothing ran (an outage, a backfill of a past day) waits for the next opening.
    Safe to run from several processes at once: each release is a compare-and-set from
    ``deferred``, so an event is released (and queued) by exactly one caller.
    """
    with runtime.sessions.begin() as session:
        expired = session.execute(
            update(CareEvent)
            .where(
                CareEvent.status == EventStatus.DEFERRED,
                CareEvent.expires_at.is_not(None),
                CareEvent.expires_at <= now,
            )
            .values(
                status=EventStatus.EXPIRED,
                status_reason=f"expired before its sending window opened (checked {now.isoformat()})",
            )
            .execution_options(synchronize_session=False)
        )
        due = _open_now(runtime, session, now)
        released: list[int] = []
        for start in range(0, len(due), 1_000):
            chunk = due[start : start + 1_000]
            result = session.execute(
                update(CareEvent)
                .where(CareEvent.id.in_(chunk), CareEvent.status == EventStatus.DEFERRED)
                .values(status=EventStatus.PLANNED, status_reason="released when the sending window opened")
                .returning(CareEvent.id)
                .execution_options(synchronize_session=False)
            )
            released.extend(result.scalars())
    count = getattr(expired, "rowcount", 0)
    if count or released:
        log.info("quiet hours: released %d deferred event(s), expired %d", len(released), count)
    # Only after the commit: a queued message must point at a row that says "planned".
    if released and enqueue is not None:
        enqueue(sorted(released))
    return sorted(released)


def _open_now(runtime: Runtime, session: Session, now: datetime) -> list[int]:
    """Deferred events past their ``not_before`` whose window is open now; the rest move to its opening."""
    rows = session.execute(
        select(CareEvent.id, Customer.timezone, Center.timezone, Center.code)
        .join(Customer, Customer.id == CareEvent.customer_id)
        .join(Center, Center.id == CareEvent.center_id)
        .where(CareEvent.status == EventStatus.DEFERRED, CareEvent.not_before <= now)
        .order_by(CareEvent.priority.desc(), CareEvent.id)
    )
    due: list[int] = []
    later: dict[tuple[datetime, str], list[int]] = defaultdict(list)
    for event_id, customer_tz, center_tz, code in rows:
        tz = ZoneInfo(customer_tz or center_tz)
        window = SendWindow.of(runtime.settings.centers.get(code))
        opening = window.next_opening(now, tz)
        if opening is None:
            due.append(event_id)
        else:
            later[(opening, window.deferral(opening, tz))].append(event_id)
    for (opening, reason), ids in later.items():
        for start in range(0, len(ids), 1_000):
            session.execute(
                update(CareEvent)
                .where(CareEvent.id.in_(ids[start : start + 1_000]), CareEvent.status == EventStatus.DEFERRED)
                .values(not_before=opening, status_reason=reason)
                .execution_options(synchronize_session=False)
            )
    return due
