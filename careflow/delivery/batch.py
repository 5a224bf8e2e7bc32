"""Deliver care events: claim, prepare, send, record the outcome. Broker-agnostic.

One event or a batch: the same path, so both keep the same guarantees (see ``deliver_many``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from careflow.delivery.claims import claim_many
from careflow.delivery.outcomes import failed_attempt
from careflow.delivery.prepare import prepare_many
from careflow.delivery.results import BatchResult, Outcome, ids_text, note
from careflow.delivery.send import send_many
from careflow.errors import SendError

if TYPE_CHECKING:
    from careflow.runtime import Runtime

log = logging.getLogger(__name__)


def deliver(runtime: Runtime, event_id: int, *, now: datetime | None = None) -> Outcome:
    """The whole life of one delivery attempt. Safe to call twice for the same event."""
    return deliver_many(runtime, [event_id], now=now).outcomes.get(event_id, Outcome.SKIPPED)


def deliver_many(
    runtime: Runtime,
    event_ids: Sequence[int],
    *,
    now: datetime | None = None,
    isolate_retried: bool = False,
    time_budget: float | None = None,
) -> BatchResult:
    """Deliver many events with a handful of transactions instead of a few per event.

    Exactly the guarantees of one delivery, per event: a compare-and-set claim counted before
    anything dangerous, consent re-checked and the body stored before the provider call, no
    transaction open while the provider is called, the attempt number fencing every status
    write. Only the bookkeeping is shared: one claim, one preparation and one recording
    transaction per batch. A worker killed mid-batch leaves its events in ``sending``;
    recovery asks the provider about each before anything is sent again.

    ``isolate_retried`` leaves events that were tried before to be delivered one per message
    (see ``BatchResult.isolated``). ``time_budget`` (seconds): events not yet sent when it runs
    out are handed back (``released``) so the batch finishes well within its time limit.
    """
    result = BatchResult()
    ids = list(dict.fromkeys(event_ids))
    if not ids:
        return result
    started = time.monotonic()
    now = now or runtime.now()
    claimed = claim_many(runtime, ids, now, result, fresh_only=isolate_retried and len(ids) > 1)
    if not claimed:
        return result
    try:
        prepared, broken = prepare_many(runtime, claimed, result, now)
    except Exception as exc:  # e.g. the database went away, or a hook broke the transaction
        log.exception("events %s: preparing the messages failed", ids_text(claimed))
        failure = SendError(f"preparing the message failed: {type(exc).__name__}: {exc}", permanent=False)
        broken, prepared = [(event_id, attempt, failure) for event_id, attempt in claimed.items()], []
    for event_id, attempt, failure in broken:
        # Nothing reached the provider; an earlier unclear attempt keeps its reconcile flag.
        note(
            result,
            event_id,
            attempt,
            failed_attempt(runtime, event_id, attempt, failure, needs_reconcile=None),
        )
    deadline = None if time_budget is None else started + time_budget

    # The batch's clock: the instant it was handed, advancing as the sends take their time.
    def clock() -> datetime:
        return now + timedelta(seconds=time.monotonic() - started)

    send_many(runtime, prepared, result, deadline, clock)
    return result
