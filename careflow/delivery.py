"""Deliver care events: claim, render, send, record the outcome. Broker-agnostic.

One event or a batch: the same path, so both keep the same guarantees (see ``deliver_many``).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Integer,
    Table,
    Text,
    bindparam,
    column,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.types import TypeEngine

from careflow.channels.base import OutgoingMessage, SendResult
from careflow.config import CenterSettings
from careflow.customers.segments import prefetch_segments
from careflow.errors import SendError, TemplateError
from careflow.policies.channel_choice import load_consents
from careflow.policies.consent import withdraw_for_carrier_opt_out
from careflow.policies.timing import Timing, customer_zone, send_timing
from careflow.provider_status import CARRIER_OPT_OUT, apply_parked
from careflow.rate_limit import back_off, pace
from careflow.recovery import recover_stuck_sends
from careflow.rendering.event import render_event_parts, template_variables
from careflow.rendering.lint import lint_refusal
from careflow.rendering.unsubscribe_links import unsubscribe_url
from careflow.rendering.whatsapp_content import ContentTemplate, content_template
from careflow.runtime import Runtime
from careflow.storage.models import CareEvent, Center, Customer, EventStatus, utcnow

log = logging.getLogger(__name__)

RATE_LIMITED = frozenset({"20429", "http-429"})
DEAD_LETTER = "dead-letter"  # error_code of an event whose attempts all died without an outcome
# Look further back than the event's creation: clocks of hosts and provider differ a little.
LOOKUP_MARGIN = timedelta(minutes=5)
# How long a worker keeps trying to record a send the provider accepted before leaving it
# to recovery (which asks the provider instead of sending again).
RECORD_PATIENCE_SECONDS = 30.0
# A batch records what the provider accepted at least this often (see _send_many).
RECORD_EVERY_SECONDS = 0.25
# Core statements over many rows at once (executemany) need the table, not the ORM class.
_EVENTS = cast(Table, CareEvent.__table__)


class Outcome(enum.StrEnum):
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    EXPIRED = "expired"  # its occasion passed before it could be sent
    DEFERRED = "deferred"  # outside the customer's sending window: released when it opens
    RETRY = "retry"  # transient failure: the broker should redeliver with backoff
    SKIPPED = "skipped"  # someone else holds or finished the event: nothing to do


def _set_status(
    session: Session,
    event_id: int,
    attempt: int,
    status: EventStatus,
    *,
    also_from: frozenset[EventStatus] = frozenset(),
    **values: Any,
) -> bool:
    """Leave ``sending`` for a final (or planned) status; only the claimant of ``attempt`` can.

    The attempt number is a fencing token: a worker whose claim was recovered and handed to
    another worker (a new attempt) can no longer overwrite that worker's outcome.
    """
    result = session.execute(
        update(CareEvent)
        .where(
            CareEvent.id == event_id,
            CareEvent.status.in_({EventStatus.SENDING, *also_from}),
            CareEvent.attempts == attempt,
        )
        .values(status=status, **values)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


_TIMING_OUTCOMES = {EventStatus.DEFERRED: Outcome.DEFERRED, EventStatus.EXPIRED: Outcome.EXPIRED}


def _not_now(timing: Timing, attempt: int) -> dict[str, Any]:
    """An event that may not go out now (quiet hours, or its occasion passed): handed back uncounted.

    Not an attempt: a deferred one is released when its window opens, like a planned deferral.
    """
    return {
        "status_reason": timing.reason,
        "not_before": timing.not_before,
        "attempts": attempt - 1,
        "claimed_at": None,
    }


def _finish(runtime: Runtime, event_id: int, attempt: int, status: EventStatus, **values: Any) -> bool:
    with runtime.sessions.begin() as session:
        return _set_status(session, event_id, attempt, status, **values)


def deliver(runtime: Runtime, event_id: int, *, now: datetime | None = None) -> Outcome:
    """The whole life of one delivery attempt. Safe to call twice for the same event."""
    return deliver_many(runtime, [event_id], now=now).outcomes.get(event_id, Outcome.SKIPPED)


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


@dataclass(frozen=True)
class _Prepared:
    event_id: int
    attempt: int
    message: OutgoingMessage
    needs_reconcile: bool
    since: datetime
    customer_id: int
    purpose: str
    zone: ZoneInfo  # the customer's, for quiet hours at the moment of the send
    center: CenterSettings | None
    expires_at: datetime | None
    rendered_now: bool = False  # its body was rendered by this attempt and must be stored


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
    claimed = _claim_many(runtime, ids, now, result, fresh_only=isolate_retried and len(ids) > 1)
    if not claimed:
        return result
    try:
        prepared, broken = _prepare_many(runtime, claimed, result, now)
    except Exception as exc:  # e.g. the database went away, or a hook broke the transaction
        log.exception("events %s: preparing the messages failed", _ids_text(claimed))
        failure = SendError(f"preparing the message failed: {type(exc).__name__}: {exc}", permanent=False)
        broken, prepared = [(event_id, attempt, failure) for event_id, attempt in claimed.items()], []
    for event_id, attempt, failure in broken:
        # Nothing reached the provider; an earlier unclear attempt keeps its reconcile flag.
        _note(
            result,
            event_id,
            attempt,
            _failed_attempt(runtime, event_id, attempt, failure, needs_reconcile=None),
        )
    deadline = None if time_budget is None else started + time_budget

    # The batch's clock: the instant it was handed, advancing as the sends take their time.
    def clock() -> datetime:
        return now + timedelta(seconds=time.monotonic() - started)

    _send_many(runtime, prepared, result, deadline, clock)
    return result


def _ids_text(ids: Iterable[int]) -> str:
    shown = list(ids)
    return ", ".join(map(str, shown[:10])) + (f" and {len(shown) - 10} more" if len(shown) > 10 else "")


def _note(result: BatchResult, event_id: int, attempt: int, outcome: Outcome) -> None:
    result.outcomes[event_id] = outcome
    if outcome is Outcome.RETRY:
        result.attempts[event_id] = attempt


def _claim_attempt(runtime: Runtime, event_id: int, now: datetime) -> Outcome | int:
    """Claim one event: its attempt number, or the outcome when there is nothing to send."""
    result = BatchResult()
    claimed = _claim_many(runtime, [event_id], now, result, fresh_only=False)
    return claimed.get(event_id) or result.outcomes.get(event_id, Outcome.SKIPPED)


def _claim_many(
    runtime: Runtime, event_ids: list[int], now: datetime, result: BatchResult, *, fresh_only: bool
) -> dict[int, int]:
    """Claim the events and count the attempts in a committed transaction of its own.

    The count is durable *before* anything that could kill the process (rendering, plugin
    hooks, the provider call), so a message that crashes its worker every time is bounded:
    once the attempts are used up it is dead-lettered here instead of being tried again.
    Returns the attempt number of each event this call now holds.
    """
    max_attempts = runtime.settings.delivery.max_attempts
    claimed: dict[int, int] = {}
    with runtime.sessions.begin() as session:
        rows = claim_rows(session, event_ids, now, fresh_only=fresh_only)
        for row in rows:
            attempt = int(row.attempts)
            if attempt <= max_attempts:
                claimed[row.id] = attempt
                continue
            # Every earlier attempt ended without an outcome: the worker died or was killed.
            reason = (
                f"dead-lettered: {attempt - 1} attempts ended without an outcome "
                f"(the worker stopped or crashed each time); last note: {row.status_reason or '-'}"
            )
            if row.needs_reconcile:
                reason += "; the last attempt may have reached the provider, check before retrying"
            _set_status(
                session, row.id, attempt, EventStatus.FAILED, status_reason=reason, error_code=DEAD_LETTER
            )
            log.error("event %s: %s", row.id, reason)
            result.outcomes[row.id] = Outcome.FAILED
        missed = [i for i in event_ids if i not in claimed and i not in result.outcomes]
        if missed:
            # A redelivered or duplicate message: whoever holds or finished the event decides;
            # an event tried before (still planned) goes on alone, in a message of its own.
            statuses = session.execute(select(CareEvent.id, CareEvent.status).where(CareEvent.id.in_(missed)))
            for event_id, status in statuses:
                if fresh_only and status == EventStatus.PLANNED:
                    result.isolated.append(event_id)
                    continue
                log.info("event %s: skipped (status %s)", event_id, status)
                result.outcomes[event_id] = Outcome.SKIPPED
    return claimed


def claim_rows(
    session: Session, event_ids: Sequence[int], now: datetime, *, fresh_only: bool = False
) -> list[Any]:
    """Compare-and-set planned -> sending; exactly one caller wins each event, however many race.

    Returns the won rows (id, attempts, needs_reconcile, status_reason). With ``fresh_only``
    only events never tried before are claimed.
    """
    query = (
        update(CareEvent)
        .where(CareEvent.id.in_(event_ids), CareEvent.status == EventStatus.PLANNED)
        .values(status=EventStatus.SENDING, attempts=CareEvent.attempts + 1, claimed_at=now)
        .returning(CareEvent.id, CareEvent.attempts, CareEvent.needs_reconcile, CareEvent.status_reason)
        .execution_options(synchronize_session=False)
    )
    if fresh_only:
        query = query.where(CareEvent.attempts == 0)
    return list(session.execute(query).all())


def _prepare(
    runtime: Runtime, event_id: int, attempt: int
) -> Outcome | tuple[OutgoingMessage, bool, datetime]:
    """Prepare one claimed event: its message, or the outcome when it must not be sent."""
    result = BatchResult()
    prepared, broken = _prepare_many(runtime, {event_id: attempt}, result, runtime.now())
    if broken:
        raise broken[0][2]
    if not prepared:
        return result.outcomes[event_id]
    return prepared[0].message, prepared[0].needs_reconcile, prepared[0].since


def _prepare_many(
    runtime: Runtime, claimed: dict[int, int], result: BatchResult, now: datetime
) -> tuple[list[_Prepared], list[tuple[int, int, SendError]]]:
    """Re-check consent, expiry and quiet hours at ``now``; render (once; the body is stored).

    One short transaction for the batch.

    Returns the messages to send, and the events whose preparation raised (a plugin's
    template-context hook, say): those are retried like a transient failure.
    """
    prepared: list[_Prepared] = []
    broken: list[tuple[int, int, SendError]] = []
    with runtime.sessions.begin() as session:
        events = session.scalars(
            select(CareEvent)
            .where(CareEvent.id.in_(claimed))
            .options(joinedload(CareEvent.customer))
            .order_by(CareEvent.id)
        ).all()
        customer_ids = {event.customer_id for event in events}
        granted = load_consents(session, customer_ids)
        prefetch_segments(session, customer_ids)  # what every template's context reads
        # Nothing is flushed per event: bodies are stored together at the end (_store_bodies).
        with session.no_autoflush, runtime.templates.batch():
            for event in events:
                attempt = claimed[event.id]
                try:
                    item = _prepare_event(runtime, session, event, attempt, granted, now)
                except Exception as exc:
                    if isinstance(exc, DBAPIError):
                        raise  # the transaction is gone: the whole batch is retried
                    log.exception("event %s: preparing the message failed", event.id)
                    failure = SendError(
                        f"preparing the message failed: {type(exc).__name__}: {exc}", permanent=False
                    )
                    broken.append((event.id, attempt, failure))
                    continue
                if isinstance(item, Outcome):
                    result.outcomes[event.id] = item
                else:
                    prepared.append(item)
        _store_bodies(session, [item for item in prepared if item.rendered_now])
    return prepared, broken


def _store_bodies(session: Session, items: Sequence[_Prepared]) -> None:
    """Store rendered bodies before anything is sent, fenced by each event's attempt.

    Stored so that every retry and every reconciliation sends and looks for exactly the
    same text, even if a marketer edits the template meanwhile.
    """
    if not items:
        return
    rows = [
        (item.event_id, item.attempt, item.message.body, item.message.subject, item.message.html_body)
        for item in items
    ]
    _update_each(
        session,
        {"event_id": Integer(), "attempt": Integer(), "body": Text(), "subject": Text(), "html_body": Text()},
        rows,
        where=_held,
        values=lambda given: {
            "body": given["body"],
            "subject": given["subject"],
            "html_body": given["html_body"],
        },
    )


def _prepare_event(
    runtime: Runtime,
    session: Session,
    event: CareEvent,
    attempt: int,
    granted: Mapping[tuple[int, str, str], bool],
    now: datetime,
) -> Outcome | _Prepared:
    event_id = event.id
    customer = event.customer
    center = customer.center
    if not event.channel or not event.recipient:
        _set_status(session, event_id, attempt, EventStatus.SUPPRESSED, status_reason="no channel chosen")
        return Outcome.SUPPRESSED
    # An opt-out that arrived after planning still wins.
    if not granted.get((customer.id, event.channel, event.purpose), False):
        _set_status(
            session,
            event_id,
            attempt,
            EventStatus.SUPPRESSED,
            status_reason=f"{event.purpose} consent on {event.channel} withdrawn before sending",
        )
        return Outcome.SUPPRESSED
    # Expiry and quiet hours hold at the send too: a retry, a backlog behind a slow sender or
    # a message whose broker copy was lost and re-queued may reach a worker hours later.
    zone, center_cfg = customer_zone(customer), runtime.settings.centers.get(center.code)
    timing = send_timing(now, zone, center_cfg, event.expires_at)
    if timing.status is not EventStatus.PLANNED:
        _set_status(session, event_id, attempt, timing.status, **_not_now(timing, attempt))
        return _TIMING_OUTCOMES[timing.status]
    rendered_now = False
    if event.body is None:
        refusal = lint_refusal(runtime, event, center)
        if refusal is not None:  # a template that fails lint is never used for a send
            _set_status(
                session,
                event_id,
                attempt,
                EventStatus.FAILED,
                status_reason=refusal,
                error_code="template-lint",
            )
            return Outcome.FAILED
    try:
        if event.body is None:
            rendered = render_event_parts(runtime, event, customer, center)
            # Stored before sending so that every retry and every reconciliation sends and
            # looks for exactly the same text, even if a marketer edits the template meanwhile.
            # (Written below for the whole batch at once, in _store_bodies.)
            for attribute, value in (
                ("body", rendered.body),
                ("subject", rendered.subject),
                ("html_body", rendered.html),
            ):
                set_committed_value(event, attribute, value)
            rendered_now = True
        content = _whatsapp_content(runtime, event, customer, center)
    except TemplateError as exc:
        _set_status(
            session, event_id, attempt, EventStatus.FAILED, status_reason=str(exc), error_code="template"
        )
        return Outcome.FAILED
    message = OutgoingMessage(
        event_id=event_id,
        channel=event.channel,
        to=event.recipient,
        body=event.body or "",
        subject=event.subject,
        center_code=center.code,
        html_body=event.html_body,
        unsubscribe_url=unsubscribe_url(runtime.settings, customer.id) if event.channel == "email" else None,
        locale=event.locale,
        content_sid=content.content_sid if content else None,
        content_variables=content.content_variables if content else None,
    )
    return _Prepared(
        event_id,
        attempt,
        message,
        event.needs_reconcile,
        event.created_at,
        customer.id,
        event.purpose,
        zone,
        center_cfg,
        event.expires_at,
        rendered_now,
    )


def _whatsapp_content(
    runtime: Runtime, event: CareEvent, customer: Customer, center: Center
) -> ContentTemplate | None:
    """The approved WhatsApp template named by the care template's sidecar, if it has one."""
    if event.channel != "whatsapp":
        return None
    return content_template(
        runtime.templates,
        event.template,
        locale=event.locale,
        center_code=center.code,
        center_locale=center.locale,
        variables=template_variables(event, customer, center, runtime),
    )


def _send_many(
    runtime: Runtime,
    prepared: list[_Prepared],
    result: BatchResult,
    deadline: float | None,
    clock: Callable[[], datetime],
) -> None:
    """Call the provider for each message, in order; record the accepted ones in groups.

    No transaction is open while the provider is called: a slow send never holds a lock.
    Accepted sends are recorded at least every ``RECORD_EVERY_SECONDS``, so a status callback
    from the provider finds its event's message id promptly even with a slow provider.
    """
    pending: list[tuple[_Prepared, SendResult]] = []
    oldest = 0.0
    index = 0
    consent = _ConsentNow(runtime)
    try:
        for index, item in enumerate(prepared):
            if deadline is not None and index and time.monotonic() > deadline:
                rest = prepared[index:]
                _release(runtime, [(p.event_id, p.attempt) for p in rest])
                result.released.extend(p.event_id for p in rest)
                log.info("batch out of time: %d event(s) handed back to the queue", len(rest))
                break
            sent = _send_one(runtime, item, clock, consent)
            if not isinstance(sent, SendResult):
                _note(result, item.event_id, item.attempt, sent)
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
            _record_sent_many(runtime, pending, patience=0.0)
        with suppress(Exception):
            item = prepared[index]
            _finish(
                runtime,
                item.event_id,
                item.attempt,
                EventStatus.PLANNED,
                status_reason=f"attempt {item.attempt}: interrupted while sending",
                needs_reconcile=True,
            )
        with suppress(Exception):
            _release(runtime, [(p.event_id, p.attempt) for p in prepared[index + 1 :]])
        raise
    finally:
        consent.close()
    _recorded(runtime, pending, result)


def _recorded(runtime: Runtime, accepted: list[tuple[_Prepared, SendResult]], result: BatchResult) -> None:
    """Record accepted sends, note them as sent and tell the plugins that react to deliveries."""
    _record_sent_many(runtime, accepted)
    for item, _ in accepted:
        result.outcomes[item.event_id] = Outcome.SENT
    _announce_delivered(runtime, [item.event_id for item, _ in accepted])


def _send_one(
    runtime: Runtime, item: _Prepared, clock: Callable[[], datetime], consent: _ConsentNow
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
            pace(runtime, message.channel)  # the sender's rate limit, shared by every worker
            # The wait for the slot may have been long: the window may have closed, the
            # occasion passed, or the customer's STOP been recorded meanwhile.
            timing = send_timing(clock(), item.zone, item.center, item.expires_at)
            if timing.status is not EventStatus.PLANNED:
                _finish(runtime, event_id, attempt, timing.status, **_not_now(timing, attempt))
                return _TIMING_OUTCOMES[timing.status]
            if not consent.granted(item):
                _finish(
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
        return _failed_attempt(runtime, event_id, attempt, exc, needs_reconcile=item.needs_reconcile)
    except Exception as exc:  # a provider SDK bug must not leave the row in "sending"
        log.exception("event %s: unexpected error from channel %s", event_id, message.channel)
        unexpected = SendError(f"{type(exc).__name__}: {exc}", permanent=False, ambiguous=True)
        return _failed_attempt(runtime, event_id, attempt, unexpected, needs_reconcile=item.needs_reconcile)
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

    def granted(self, item: _Prepared) -> bool:
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


def _held(given: Mapping[str, Any]) -> tuple[ColumnElement[bool], ...]:
    """Each row's event, still claimed (``sending``) by that row's attempt."""
    table = _EVENTS
    return (
        table.c.id == given["event_id"],
        table.c.attempts == given["attempt"],
        table.c.status == EventStatus.SENDING,
    )


def _update_each(
    session: Session,
    types: Mapping[str, TypeEngine[Any]],
    rows: Sequence[tuple[Any, ...]],
    *,
    where: Callable[[Mapping[str, Any]], Sequence[ColumnElement[bool]]],
    values: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    returning: Sequence[ColumnElement[Any]] = (),
) -> list[Any] | None:
    """Update care events, each row of ``rows`` (named and typed by ``types``) with its own values.

    ``where`` and ``values`` build the statement from the rows' columns. PostgreSQL: one
    ``UPDATE … FROM unnest(…) AS given(…)`` for all rows, one typed array per column, with
    ``returning``'s rows returned. Its text is the same whatever the rows, so SQLAlchemy
    compiles it once and PostgreSQL prepares it once per connection (a ``VALUES`` list would
    be compiled, sent and planned anew for every batch). SQLite, which has no arrays: the
    statement once per row (executemany, in-process), returning None.
    """
    table = _EVENTS
    if session.get_bind().dialect.name == "postgresql":
        arrays = [
            bindparam(f"given_{name}", [row[i] for row in rows], type_=ARRAY(kind))
            for i, (name, kind) in enumerate(types.items())
        ]
        given = (
            func.unnest(*arrays)
            .table_valued(*(column(name, kind) for name, kind in types.items()))
            .render_derived(name="given")
        )
        columns: Mapping[str, Any] = {name: given.c[name] for name in types}
        statement = update(table).where(*where(columns)).values(**values(columns))
        if returning:
            return list(session.execute(statement.returning(*returning)))
        session.execute(statement)
        return None
    # Parameter names unlike any column's: SQLAlchemy reserves those for SET.
    params: Mapping[str, Any] = {name: bindparam(f"row_{name}") for name in types}
    session.execute(
        update(table).where(*where(params)).values(**values(params)),
        [{f"row_{name}": value for name, value in zip(types, row, strict=True)} for row in rows],
    )
    return None


def _release(runtime: Runtime, held: Sequence[tuple[int, int]]) -> None:
    """Hand claimed events that were never tried back to ``planned``, their attempt uncounted."""
    if not held:
        return
    with runtime.sessions.begin() as session:
        _update_each(
            session,
            {"event_id": Integer(), "attempt": Integer()},
            held,
            where=_held,
            values=lambda given: {
                "status": EventStatus.PLANNED,
                "attempts": given["attempt"] - 1,
                "claimed_at": None,
            },
        )


def _failed_attempt(
    runtime: Runtime, event_id: int, attempt: int, exc: SendError, *, needs_reconcile: bool | None
) -> Outcome:
    """Record a failed attempt: permanent errors and the last attempt fail, others retry.

    ``needs_reconcile=None`` means this attempt never reached the provider: the flag is kept.
    """
    if exc.permanent:
        with runtime.sessions.begin() as session:
            failed = _set_status(
                session, event_id, attempt, EventStatus.FAILED, status_reason=str(exc), error_code=exc.code
            )
            if failed and exc.code == CARRIER_OPT_OUT:
                # The handset opted out at the carrier: never try this channel again.
                event = session.get(CareEvent, event_id)
                assert event is not None and event.channel is not None
                withdraw_for_carrier_opt_out(session, event.customer_id, event.channel, event.recipient)
        return Outcome.FAILED
    if attempt >= runtime.settings.delivery.max_attempts:
        reason = f"gave up after {attempt} attempts: {exc}"
        if exc.ambiguous or needs_reconcile:
            reason += " (the last attempt may have reached the provider)"
        _finish(runtime, event_id, attempt, EventStatus.FAILED, status_reason=reason, error_code=exc.code)
        return Outcome.FAILED
    flag = {} if needs_reconcile is None else {"needs_reconcile": needs_reconcile or exc.ambiguous}
    _finish(
        runtime,
        event_id,
        attempt,
        EventStatus.PLANNED,
        status_reason=f"attempt {attempt}: {exc}",
        error_code=exc.code,
        **flag,
    )
    return Outcome.RETRY


def _record_sent_many(
    runtime: Runtime,
    accepted: Sequence[tuple[_Prepared, SendResult]],
    *,
    patience: float = RECORD_PATIENCE_SECONDS,
) -> None:
    """The provider has these messages: record that, riding out a database that is briefly away.

    If the database stays away the rows are left in ``sending`` and recovery reconciles them
    with the provider later, which finds each message instead of sending it again.
    """
    if not accepted:
        return
    sent_at = utcnow()
    rows = [(item.event_id, item.attempt, sent.provider_message_id) for item, sent in accepted]
    ids = [item.event_id for item, _ in accepted]
    delay = 0.2
    deadline = time.monotonic() + patience
    while True:
        try:
            with runtime.sessions.begin() as session:
                recorded = _mark_sent(session, rows, sent_at)
                # Delivery reports that came before this record (a fast provider, a slow batch).
                apply_parked(session, [sid for _, _, sid in rows if sid])
            break
        except DBAPIError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("events %s: sent, but recording them failed (%s); retrying", _ids_text(ids), exc.orig)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    for item, sent in accepted:
        if recorded.get(item.event_id) != sent.provider_message_id:
            log.warning(
                "event %s: sent, but attempt %s no longer holds the row; the next claimant "
                "will find the message at the provider",
                item.event_id,
                item.attempt,
            )


def _mark_sent(
    session: Session, rows: list[tuple[int, int, str | None]], sent_at: datetime
) -> dict[int, str | None]:
    """Set (event, attempt, provider id) rows to sent; returns each event's provider id now stored."""
    table = _EVENTS
    outcome = {
        "status": EventStatus.SENT,
        "sent_at": sent_at,
        "status_reason": None,
        "error_code": None,
        "needs_reconcile": False,
    }
    # Recovery may have put a row back to planned meanwhile; same attempt, so nobody else has
    # claimed it since and the outcome is still ours to record.
    done = _update_each(
        session,
        {"event_id": Integer(), "attempt": Integer(), "provider_id": Text()},
        rows,
        where=lambda given: (
            table.c.id == given["event_id"],
            table.c.attempts == given["attempt"],
            or_(table.c.status == EventStatus.SENDING, table.c.status == EventStatus.PLANNED),
        ),
        values=lambda given: {"provider_message_id": given["provider_id"], **outcome},
        # RETURNING says which rows this attempt still held (PostgreSQL); SQLite looks after.
        returning=(table.c.id, table.c.provider_message_id),
    )
    if done is None:
        done = list(
            session.execute(
                select(CareEvent.id, CareEvent.provider_message_id).where(
                    CareEvent.id.in_([r[0] for r in rows])
                )
            )
        )
    return {event_id: provider_id for event_id, provider_id in done}


def _announce_delivered(runtime: Runtime, event_ids: Sequence[int]) -> None:
    hook = runtime.registry.pm.hook.careflow_event_delivered
    if not event_ids or not hook.get_hookimpls():
        return
    with runtime.sessions() as session:
        events = session.scalars(
            select(CareEvent).where(CareEvent.id.in_(event_ids)).order_by(CareEvent.id)
        ).all()
        session.expunge_all()
    for event in events:
        try:  # outside any transaction: a reaction may write with its own session
            hook(event=event)
        except Exception:
            log.exception("a careflow_event_delivered hook failed for event %s", event.id)


def stale_event_ids(
    runtime: Runtime, *, now: datetime, stuck_after: timedelta, day: date | None = None
) -> list[int]:
    """Events to (re)queue: planned ones, and ones stuck in ``sending`` by a worker that died.

    A stuck event goes back to ``planned`` flagged for reconciliation, so the provider is
    asked whether it already has the message before anything is sent again.
    """
    recover_stuck_sends(runtime, older_than=stuck_after)
    with runtime.sessions() as session:
        query = select(CareEvent.id).where(CareEvent.status == EventStatus.PLANNED)
        if day is not None:
            query = query.where(CareEvent.due_date <= day)
        return list(session.scalars(query.order_by(CareEvent.id)))
