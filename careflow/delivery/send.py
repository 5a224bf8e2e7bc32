"""Send prepared messages, in order, no transaction open during a provider call.

Each send waits for its slot under the sender's rate limit, then checks quiet hours, expiry and
the customer's consent at that very instant, and only then calls the provider.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError

from careflow.channels.base import SendResult
from careflow.delivery.claims import release
from careflow.delivery.outcomes import (
    TIMING_OUTCOMES,
    announce_delivered,
    failed_attempt,
    not_now,
    record_sent_many,
)
from careflow.delivery.rate_limit import back_off, wait_for_send_slot
from careflow.delivery.results import BatchResult, Outcome, note
from careflow.delivery.rows import finish
from careflow.errors import SendError
from careflow.policies.timing import send_timing
from careflow.storage.models import EventStatus

if TYPE_CHECKING:
    from careflow.delivery.prepare import Prepared
    from careflow.runtime import Runtime

log = logging.getLogger(__name__)

RATE_LIMITED = frozenset({"20429", "http-429"})
# Look further back than the event's creation: clocks of hosts and provider differ a little.
LOOKUP_MARGIN = timedelta(minutes=5)
# A batch records what the provider accepted at least this often (see send_many).
RECORD_EVERY_SECONDS = 0.25


def send_many(
    runtime: Runtime,
    prepared: list[Prepared],
    result: BatchResult,
    deadline: float | None,
    clock: Callable[[], datetime],
) -> None:
    """Call the provider for each message, in order; record the accepted ones in groups.

    No transaction is open while the provider is called: a slow send never holds a lock.
    Accepted sends are recorded at least every ``RECORD_EVERY_SECONDS``, so a status callback
    from the provider finds its event's message id promptly even with a slow provider.
    """
    pending: list[tuple[Prepared, SendResult]] = []
    oldest = 0.0
    index = 0
    consent = _ConsentNow(runtime)
    try:
        for index, item in enumerate(prepared):
            if deadline is not None and index and time.monotonic() > deadline:
                rest = prepared[index:]
                release(runtime, [(p.event_id, p.attempt) for p in rest])
                result.released.extend(p.event_id for p in rest)
                log.info("batch out of time: %d event(s) handed back to the queue", len(rest))
                break
            sent = _send_one(runtime, item, clock, consent)
            if not isinstance(sent, SendResult):
                note(result, item.event_id, item.attempt, sent)
                continue
            if not pending:
                oldest = time.monotonic()
            pending.append((item, sent))
            if time.monotonic() - oldest >= RECORD_EVERY_SECONDS:
                _recorded(runtime, pending, result)
                pending = []
    except BaseException:
        # Interrupted mid-call (Dramatiq's time limit, shutdown): the provider may have the
        # message in flight, so its next attempt must ask first; the ones not tried yet go
        # back as they were. Best effort: the process may be dying.
        with suppress(Exception):
            record_sent_many(runtime, pending, patience=0.0)
        with suppress(Exception):
            item = prepared[index]
            finish(
                runtime,
                item.event_id,
                item.attempt,
                EventStatus.PLANNED,
                status_reason=f"attempt {item.attempt}: interrupted while sending",
                needs_reconcile=True,
            )
        with suppress(Exception):
            release(runtime, [(p.event_id, p.attempt) for p in prepared[index + 1 :]])
        raise
    finally:
        consent.close()
    _recorded(runtime, pending, result)


def _recorded(runtime: Runtime, accepted: list[tuple[Prepared, SendResult]], result: BatchResult) -> None:
    """Record accepted sends, note them as sent and tell the plugins that react to deliveries."""
    record_sent_many(runtime, accepted)
    for item, _ in accepted:
        result.outcomes[item.event_id] = Outcome.SENT
    announce_delivered(runtime, [item.event_id for item, _ in accepted])


def _send_one(
    runtime: Runtime, item: Prepared, clock: Callable[[], datetime], consent: _ConsentNow
) -> SendResult | Outcome:
    """One provider call (or a look-up first, after an unclear attempt); failures are recorded here."""
    event_id, message, attempt = item.event_id, item.message, item.attempt
    channel = runtime.channel(message.channel)
    try:
        result: SendResult | None = None
        if item.needs_reconcile:
            # The last attempt may have gone through: ask the provider before sending again.
            result = channel.lookup(message, item.since - LOOKUP_MARGIN)
            if result is not None:
                log.info("event %s: found at the provider after an unclear attempt; not resending", event_id)
        if result is None:
            wait_for_send_slot(runtime, message.channel)  # the sender's rate limit, shared by every worker
            # The wait for the slot may have been long: the window may have closed, the
            # occasion passed, or the customer's STOP been recorded meanwhile.
            timing = send_timing(clock(), item.zone, item.center, item.expires_at)
            if timing.status is not EventStatus.PLANNED:
                finish(runtime, event_id, attempt, timing.status, **not_now(timing, attempt))
                return TIMING_OUTCOMES[timing.status]
            if not consent.granted(item):
                finish(
                    runtime,
                    event_id,
                    attempt,
                    EventStatus.SUPPRESSED,
                    status_reason=f"{item.purpose} consent on {message.channel} withdrawn before sending "
                    "(re-checked just before the provider call)",
                )
                log.info("event %s: consent withdrawn while it waited to be sent; suppressed", event_id)
                return Outcome.SUPPRESSED
            result = channel.send(message)
    except SendError as exc:
        if exc.code in RATE_LIMITED:
            waited = back_off(runtime, message.channel, attempt, exc.retry_after)
            log.info("event %s: rate limited by the provider; sender held for %.1f s", event_id, waited)
        return failed_attempt(runtime, event_id, attempt, exc, needs_reconcile=item.needs_reconcile)
    except Exception as exc:  # a provider SDK bug must not leave the row in "sending"
        log.exception("event %s: unexpected error from channel %s", event_id, message.channel)
        unexpected = SendError(f"{type(exc).__name__}: {exc}", permanent=False, ambiguous=True)
        return failed_attempt(runtime, event_id, attempt, unexpected, needs_reconcile=item.needs_reconcile)
    return result


# The look-up before each send, in the driver's own parameter style: it runs once per message,
# so it goes straight to the driver's cursor (psycopg prepares it on the server), which costs
# about a third of a SQLAlchemy execution.
_CONSENT_NOW = "SELECT granted FROM consents WHERE customer_id = {0} AND channel = {0} AND purpose = {0}"
_PLACEHOLDER = {"postgresql": "%s", "sqlite": "?"}


def _driver_errors(runtime: Runtime) -> tuple[type[Exception], ...]:
    """Database errors, the driver's own included (a raw cursor's are not wrapped by SQLAlchemy)."""
    error = getattr(runtime.engine.dialect.loaded_dbapi, "Error", None)
    return (DBAPIError, error) if isinstance(error, type) and issubclass(error, Exception) else (DBAPIError,)


class _ConsentNow:
    """The customer's consent right now, asked immediately before each provider call.

    After the rate-limit wait, so a withdrawal committed before the message is handed to the
    provider always wins. One unique-index look-up per send, on a connection kept for the
    batch in autocommit: no transaction (and no lock) while the provider is called, and no
    pool checkout (with its liveness ping) per message.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._open: ExitStack | None = None
        self._cursor: Any = None
        self._query = ""
        self._options: dict[str, Any] = {}

    def granted(self, item: Prepared) -> bool:
        params = (item.customer_id, item.message.channel, item.purpose)
        try:
            if self._cursor is None:
                self._open = ExitStack()
                connection = self._open.enter_context(self._runtime.quick_read())
                dialect = connection.dialect.name
                self._query = _CONSENT_NOW.format(_PLACEHOLDER.get(dialect, "%s"))
                self._options = {"prepare": True} if dialect == "postgresql" else {}
                self._cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                self._open.callback(self._cursor.close)
            self._cursor.execute(self._query, params, **self._options)
            row = self._cursor.fetchone()
        except _driver_errors(self._runtime) as exc:  # nothing was sent: transient
            self.close()  # the next look-up takes a fresh connection
            raise SendError(f"could not re-check consent before sending: {exc}", permanent=False) from exc
        return bool(row and row[0])

    def close(self) -> None:
        if self._open is not None:
            with suppress(Exception):
                self._open.close()
        self._open, self._cursor = None, None
