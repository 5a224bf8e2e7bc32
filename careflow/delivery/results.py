"""What a delivery attempt came to, per event and per batch."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field


class Outcome(enum.StrEnum):
    """What one delivery attempt did with its event."""

    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    EXPIRED = "expired"  # its occasion passed before it could be sent
    DEFERRED = "deferred"  # outside the customer's sending window: released when it opens
    RETRY = "retry"  # transient failure: the broker should redeliver with backoff
    SKIPPED = "skipped"  # someone else holds or finished the event: nothing to do


@dataclass
class BatchResult:
    """What ``deliver_many`` did with each event it was handed."""

    outcomes: dict[int, Outcome] = field(default_factory=dict)
    # The attempt number of each event whose outcome is RETRY (its backoff grows with it).
    attempts: dict[int, int] = field(default_factory=dict)
    # Tried before and still planned: delivered one per message, so that one poison event
    # that kills its worker is dead-lettered alone instead of taking a whole batch with it.
    isolated: list[int] = field(default_factory=list)
    # Claimed but handed back unsent because the batch ran out of time: to be queued again.
    released: list[int] = field(default_factory=list)


def note(result: BatchResult, event_id: int, attempt: int, outcome: Outcome) -> None:
    """Note an event's outcome; a retry keeps its attempt number, which its backoff grows with."""
    result.outcomes[event_id] = outcome
    if outcome is Outcome.RETRY:
        result.attempts[event_id] = attempt


def ids_text(ids: Iterable[int]) -> str:
    """Event ids for a log line: the first ten, and how many more."""
    shown = list(ids)
    return ", ".join(map(str, shown[:10])) + (f" and {len(shown) - 10} more" if len(shown) > 10 else "")
