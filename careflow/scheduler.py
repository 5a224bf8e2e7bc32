"""Plan a day: walk customers in batches, collect due occasions, record them in the outbox."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from careflow import metrics
from careflow.bulk import insert_ignoring_duplicates
from careflow.care import CarePlugin, Occasion, PlanContext, PluginSettings
from careflow.models import CareEvent, Center, Customer, EventStatus
from careflow.policies import choose_channel, load_consents
from careflow.runtime import Runtime

log = logging.getLogger(__name__)

# Outbox rows per bulk insert (careflow.bulk picks the fastest way per database).
_INSERT_CHUNK = 2_000


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that raised or returned something malformed; the run went on without it."""

    plugin: str
    batch: tuple[int, int]
    error: str
    customer: str | None = None


@dataclass
class PlanReport:
    """What one planning pass found and did."""

    occasions: int = 0
    new: int = 0
    already_recorded: int = 0
    suppressed: int = 0
    batches: int = 0
    per_plugin: dict[str, Counter[str]] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # every occasion key seen, for reporting
    preview: list[dict[str, Any]] = field(default_factory=list)  # dry runs: what would be recorded

    def count(self, plugin: str, outcome: str) -> None:
        self.per_plugin.setdefault(plugin, Counter())[outcome] += 1


def idempotency_key(plugin: str, occasion: Occasion) -> str:
    """``plugin:occasion:period:customer``: the same occasion always maps to the same key."""
    return f"{plugin}:{occasion.key}:{occasion.period}:{occasion.customer.id}"


def customer_id_batches(session: Session, batch_size: int) -> Iterator[tuple[int, int]]:
    """Inclusive id ranges covering every customer, ``batch_size`` ids wide."""
    lo, hi = session.execute(select(func.min(Customer.id), func.max(Customer.id))).one()
    if lo is None:
        return
    start = lo
    while start <= hi:
        yield (start, min(start + batch_size - 1, hi))
        start += batch_size


def customer_id_span(session: Session) -> tuple[int, int] | None:
    """The lowest and highest customer id, or None when there are no customers."""
    lo, hi = session.execute(select(func.min(Customer.id), func.max(Customer.id))).one()
    return None if lo is None else (lo, hi)


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


def plan(
    runtime: Runtime,
    *,
    now: datetime,
    day: date | None = None,
    dry_run: bool = False,
    enqueue: Callable[[Sequence[int]], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    id_span: tuple[int, int] | None = None,
) -> PlanReport:
    """Plan every enabled care plugin over all customers; enqueue each new event after its commit.

    ``on_batch(done, total)`` reports progress in customer ids. With ``dry_run`` nothing is
    written or queued. ``id_span`` limits the run to one inclusive id range (a shard).
    """
    report = PlanReport()
    started = time.perf_counter()
    enabled = runtime.registry.enabled(runtime.settings)
    with runtime.sessions() as session:
        span = id_span or customer_id_span(session)
        center_tz = dict(session.execute(select(Center.id, Center.timezone)).all())
    if span is None:
        return report
    narrow = bool(enabled) and all(plugin.narrows_in_sql for plugin, _ in enabled.values())
    windows = IdWindows(span, runtime.settings.scheduler.batch_size, adaptive=narrow)
    for id_range in windows:
        before = report.occasions
        with runtime.sessions() as session:
            new_ids = _plan_batch(
                runtime,
                session,
                enabled,
                report,
                now=now,
                day=day,
                id_range=id_range,
                center_tz=center_tz,
                dry_run=dry_run,
            )
            if not dry_run:
                session.commit()
        report.batches += 1
        windows.found(report.occasions - before)
        # Only after the commit: a message must never point at a row that might not exist.
        if new_ids and enqueue is not None:
            enqueue(new_ids)
        if on_batch is not None:
            on_batch(*windows.progress())
    if not dry_run:
        metrics.observe_planning(time.perf_counter() - started)
    return report


def _collect(plugin: CarePlugin, ctx: PlanContext, report: PlanReport) -> list[Occasion]:
    """Run one plugin over one batch, isolating its failures from the rest of the run."""
    try:
        found = list(plugin.occasions(ctx))
    except Exception as exc:
        log.exception("care plugin %r failed on customers %s-%s", plugin.name, *ctx.id_range)
        report.failures.append(PluginFailure(plugin.name, ctx.id_range, f"{type(exc).__name__}: {exc}"))
        return []
    good = []
    lo, hi = ctx.id_range
    for occ in found:
        problem = _malformed(occ, lo, hi)
        if problem:
            who = (
                str(occ.customer.external_id)
                if isinstance(occ, Occasion) and isinstance(occ.customer, Customer)
                else None
            )
            report.failures.append(PluginFailure(plugin.name, ctx.id_range, problem, customer=who))
            continue
        good.append(occ)
    return good


def _malformed(occ: Any, lo: int, hi: int) -> str | None:
    if not isinstance(occ, Occasion):
        return f"yielded {type(occ).__name__}, not an Occasion"
    if not isinstance(occ.customer, Customer) or not lo <= occ.customer.id <= hi:
        return "yielded an occasion for a customer outside its batch"
    if not occ.key or not occ.period or ":" in occ.key:
        return f"occasion key {occ.key!r} / period {occ.period!r} must be non-empty and the key free of ':'"
    try:
        json.dumps(dict(occ.context))
    except (TypeError, ValueError) as exc:
        return f"occasion context is not plain JSON data: {exc}"
    return None


def _plan_batch(
    runtime: Runtime,
    session: Session,
    enabled: dict[str, tuple[CarePlugin, PluginSettings]],
    report: PlanReport,
    *,
    now: datetime,
    day: date | None,
    id_range: tuple[int, int],
    center_tz: dict[int, str],
    dry_run: bool,
) -> list[int]:
    found: list[tuple[CarePlugin, Occasion]] = []
    for plugin, plugin_settings in enabled.values():
        ctx = PlanContext(
            session=session,
            now=now,
            day=day,
            id_range=id_range,
            settings=plugin_settings,
            default_timezone=center_tz,
        )
        found.extend((plugin, occ) for occ in _collect(plugin, ctx, report))
    if not found:
        return []
    consents = load_consents(session, (occ.customer.id for _, occ in found))
    channels = runtime.channel_order()
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    center_code: dict[str, str] = {}  # for metrics, labelled like deliveries
    for plugin, occ in found:
        key = idempotency_key(plugin.name, occ)
        if key in seen:  # a plugin reporting the same occasion twice in one batch
            continue
        seen.add(key)
        customer = occ.customer
        center_code[key] = customer.center.code
        choice = choose_channel(customer, plugin.purpose, channels, consents)
        rows.append(
            {
                "idempotency_key": key,
                "center_id": customer.center_id,
                "customer_id": customer.id,
                "plugin": plugin.name,
                "occasion": occ.key,
                "period": occ.period,
                "purpose": str(plugin.purpose),
                "priority": plugin.priority,
                "due_date": occ.due_date,
                "channel": choice.channel,
                "recipient": choice.recipient,
                "template": occ.template or plugin.name,
                "locale": customer.locale or customer.center.locale,
                "context": dict(occ.context),
                "status": EventStatus.PLANNED if choice.channel else EventStatus.SUPPRESSED,
                "status_reason": choice.reason,
            }
        )
    report.occasions += len(rows)
    report.keys.extend(r["idempotency_key"] for r in rows)
    if dry_run:
        return _preview(session, rows, report)
    new_ids: list[int] = []
    for start in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[start : start + _INSERT_CHUNK]
        inserted = insert_ignoring_duplicates(session, chunk)
        by_key = {row.idempotency_key: row for row in inserted}
        for row in chunk:
            hit = by_key.get(row["idempotency_key"])
            if hit is None:
                report.already_recorded += 1
                report.count(row["plugin"], "already recorded")
            elif hit.status == EventStatus.SUPPRESSED:
                report.new += 1
                report.suppressed += 1
                report.count(row["plugin"], "suppressed")
                metrics.count_events(row["plugin"], center_code[row["idempotency_key"]], "suppressed")
            else:
                report.new += 1
                report.count(row["plugin"], "planned")
                metrics.count_events(row["plugin"], center_code[row["idempotency_key"]], "planned")
                new_ids.append(hit.id)
    return new_ids


def _preview(session: Session, rows: list[dict[str, Any]], report: PlanReport) -> list[int]:
    keys = [r["idempotency_key"] for r in rows]
    existing = set(
        session.scalars(select(CareEvent.idempotency_key).where(CareEvent.idempotency_key.in_(keys)))
    )
    for row in rows:
        if row["idempotency_key"] in existing:
            report.already_recorded += 1
            report.count(row["plugin"], "already recorded")
            continue
        report.new += 1
        outcome = "suppressed" if row["status"] == EventStatus.SUPPRESSED else "planned"
        report.suppressed += outcome == "suppressed"
        report.count(row["plugin"], outcome)
        report.preview.append(row)
    return []
