"""A frozen, controllable clock for tests: careflow takes ``now=`` explicitly, so tests pass ``clock.now``."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

DEFAULT_INSTANT = "2026-05-11T09:00:00+08:00"


def parse_moment(at: datetime | str, tz: str) -> datetime:
    """An aware instant from a datetime or ISO text; naive values are wall-clock time in ``tz``."""
    value = at if isinstance(at, datetime) else datetime.fromisoformat(at)
    if value.tzinfo is None:
        return value.replace(tzinfo=ZoneInfo(tz))
    return value


class FrozenClock:
    """ "Now" that only moves when the test says so, seen from any time zone.

    ``FrozenClock("2026-12-01 08:00", tz="Europe/Oslo").now`` is 08:00 in Oslo; ``.local("Asia/Shanghai")``
    is the same instant on a Shanghai wall clock; ``.advance(days=1)`` moves it.
    """

    def __init__(self, at: datetime | str = DEFAULT_INSTANT, tz: str = "UTC") -> None:
        self.tz = tz
        self._now = parse_moment(at, tz).astimezone(ZoneInfo(tz))

    @property
    def now(self) -> datetime:
        """The frozen instant, aware, in the clock's time zone."""
        return self._now

    def set(self, at: datetime | str, tz: str | None = None) -> datetime:
        """Jump to ``at`` (naive text is wall-clock time in ``tz``, default the clock's zone)."""
        if tz is not None:
            self.tz = tz
        self._now = parse_moment(at, self.tz).astimezone(ZoneInfo(self.tz))
        return self._now

    def advance(self, delta: timedelta | None = None, **parts: float) -> datetime:
        """Move forward by ``delta`` or by ``timedelta(**parts)``, e.g. ``advance(days=1)``."""
        self._now = self._now + (delta or timedelta(**parts))
        return self._now

    def local(self, tz: str) -> datetime:
        """The same instant on a wall clock in ``tz``."""
        return self._now.astimezone(ZoneInfo(tz))

    def today(self, tz: str | None = None) -> date:
        """The local date in ``tz`` (default: the clock's zone)."""
        return self.local(tz or self.tz).date()

    def __repr__(self) -> str:
        return f"FrozenClock({self._now.isoformat()!r}, tz={self.tz!r})"
