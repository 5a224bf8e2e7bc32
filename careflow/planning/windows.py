"""Id windows: the customer-id ranges a day is planned in, sized by how many occasions turn up."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from careflow.storage.models import Customer


def customer_id_span(session: Session) -> tuple[int, int] | None:
    """The lowest and highest customer id, or None when there are no customers."""
    # Two statements: SQLite answers a lone min() or max() from the index, not both in one select.
    lo: int | None = session.scalar(select(func.min(Customer.id)))
    hi: int | None = session.scalar(select(func.max(Customer.id)))
    return None if lo is None or hi is None else (lo, hi)


class IdWindows:
    """Inclusive id windows over ``span``; with narrow plugins their width follows the due density.

    Plugins that select only due customers in indexed SQL (``narrows_in_sql``) get windows
    that widen while few occasions turn up and shrink when many do, so a quiet day over a
    million customers costs a handful of indexed queries instead of one per ``batch_size``
    ids, while a busy day still holds about ``batch_size`` occasions in memory at a time.
    Other plugins keep fixed ``batch_size`` windows: they may load every customer of a window.
    """

    GROWTH = 8  # at most this factor wider per step, so one surprise costs little

    def __init__(self, span: tuple[int, int], batch_size: int, *, adaptive: bool) -> None:
        self.lo, self.hi = span
        self.next = self.lo
        self.batch_size = batch_size
        # The first window is batch_size wide even when adaptive: on a day when everyone is due
        # (a holiday) it holds no more occasions than a fixed window would. Since each window
        # reads only its own index entries, a quiet day's few extra windows cost little.
        self.width = self.last_width = batch_size
        self.adaptive = adaptive

    def __iter__(self) -> Iterator[tuple[int, int]]:
        while self.next <= self.hi:
            window = (self.next, min(self.next + self.width - 1, self.hi))
            self.next = window[1] + 1
            self.last_width = window[1] - window[0] + 1
            yield window

    def found(self, occasions: int) -> None:
        """Size the next window so it should hold about half a batch of occasions."""
        if not self.adaptive:
            return
        # Measured on the window just planned (the last one of a span may be cut short).
        wanted = self.last_width * (self.batch_size / 2) / max(occasions, 1)
        self.width = max(1, min(int(wanted), self.last_width * self.GROWTH))

    def progress(self) -> tuple[int, int]:
        return (min(self.next, self.hi + 1) - self.lo, self.hi - self.lo + 1)
