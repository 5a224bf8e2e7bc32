"""Plan a day: walk customers in batches, collect due occasions, record them in the outbox."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, select
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import Session, sessionmaker

from careflow import metrics
from careflow.care import CarePlugin, Occasion, PlanContext, PluginSettings, priority_of
from careflow.customers.segments import load_labels, matches
from careflow.planning.center_settings import PluginPass, plugin_passes
from careflow.planning.isolation import PLANNING_READS, planning_sessions, run_plugin_batch
from careflow.planning.outbox import idempotency_key, insert_ignoring_duplicates
from careflow.planning.prepare import prepare_run
from careflow.planning.run_records import record_run
from careflow.planning.windows import IdWindows, customer_id_span
from careflow.policies.channel_choice import choose_channel, load_consents
from careflow.policies.rows import PlannedRow
from careflow.policies.timing import apply_timing_and_caps
from careflow.storage.models import CareEvent, Center, Customer, EventStatus

if TYPE_CHECKING:
    from careflow.runtime import Runtime

log = logging.getLogger(__name__)

# Outbox rows per bulk insert (careflow.planning.outbox picks the fastest way per database).
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
    prepare_seconds: float = 0.0  # the once-per-run pre-planning step (segments, plugins' prepare)
    per_plugin: dict[str, Counter[str]] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # every occasion key seen, for reporting
    earlier_keys: list[str] = field(default_factory=list)  # of those, the ones earlier runs recorded
    preview: list[PlannedRow] = field(default_factory=list)  # dry runs: what would be recorded

    def count(self, plugin: str, outcome: str) -> None:
        self.per_plugin.setdefault(plugin, Counter())[outcome] += 1


@dataclass
class _Isolation:
    """How plugins run in this pass: their own sessions, a time budget, and who overran it."""

    sessions: sessionmaker[Session]
    budget_seconds: float
    commit: bool
    close: Callable[[], None]
    abandoned: set[str] = field(default_factory=set)

    @classmethod
    def start(cls, runtime: Runtime, *, dry_run: bool) -> _Isolation:
        sessions, close = planning_sessions(runtime.engine)
        budget = runtime.settings.scheduler.plugin_time_budget_seconds
        return cls(sessions, budget, commit=not dry_run, close=close)


def plan(
    runtime: Runtime,
    *,
    now: datetime,
    day: date | None = None,
    dry_run: bool = False,
    enqueue: Callable[[Sequence[int]], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    center_ids: Collection[int] | None = None,
    id_span: tuple[int, int] | None = None,
    clock: datetime | None = None,
    on_preview: Callable[[list[PlannedRow]], None] | None = None,
    plugins: Collection[str] | None = None,
) -> PlanReport:
    """Plan every enabled care plugin over all customers; enqueue each new event after its commit.

    ``on_batch(done, total)`` reports progress in customer ids. With ``dry_run`` nothing is
    written or queued. ``center_ids`` limits the recorded occasions to those centers'
    customers; ``id_span`` limits the run to one inclusive id range (a shard); ``plugins``
    to those care plugins (an intraday weather pass): such a pass keeps the day's segments
    and is not recorded as the last run of every plugin for ``careflow plugins``.
    ``now`` is the instant planned; ``clock``, when later (a backfill of a past day), is when
    messages can really go out: what expires before it is recorded expired.
    ``on_preview`` takes a dry run's rows batch by batch instead of ``report.preview``, so a
    dry run over millions of customers never holds them all.
    Each plugin runs isolated (see ``careflow.planning.isolation``); its failures are in the report and,
    unless ``dry_run``, recorded for ``careflow plugins``.
    """
    report = PlanReport()
    started = time.perf_counter()
    enabled = runtime.registry.enabled(runtime.settings)
    if plugins is not None:
        enabled = {name: chosen for name, chosen in enabled.items() if name in plugins}
    if not dry_run and id_span is None:
        # Pre-planning: segments and each plugin's once-per-run work, committed before any batch.
        # A shard skips it: the run that created the shards did it once for all of them.
        for name, error in prepare_run(runtime, enabled, now=now, day=day, segments=plugins is None):
            report.failures.append(PluginFailure(name, (0, 0), error))
        report.prepare_seconds = time.perf_counter() - started
    with runtime.sessions() as session:
        # Each center's console settings win over careflow.toml (see careflow.planning.center_settings).
        runs = plugin_passes(runtime.registry, runtime.settings, session)
        if plugins is not None:
            runs = [run for run in runs if run.plugin.name in plugins]
        span = id_span or customer_id_span(session)
        center_tz = dict(session.execute(select(Center.id, Center.timezone)).all())
    if span is None or (plugins is not None and not runs):
        return report
    narrow = bool(runs) and all(run.plugin.narrows_in_sql for run in runs)
    windows = IdWindows(span, runtime.settings.scheduler.batch_size, adaptive=narrow)
    isolation = _Isolation.start(runtime, dry_run=dry_run)
    for id_range in windows:
        before = report.occasions
        with runtime.sessions() as session:
            new_ids = _plan_batch(
                runtime,
                session,
                runs,
                report,
                now=now,
                day=day,
                id_range=id_range,
                center_tz=center_tz,
                dry_run=dry_run,
                center_ids=center_ids,
                isolation=isolation,
                clock=clock,
            )
            if not dry_run:
                session.commit()
        if on_preview is not None and report.preview:
            rows, report.preview = report.preview, []
            on_preview(rows)
        report.batches += 1
        windows.found(report.occasions - before)
        # Only after the commit: a message must never point at a row that might not exist.
        if new_ids and enqueue is not None:
            enqueue(new_ids)
        if on_batch is not None:
            on_batch(*windows.progress())
    isolation.close()
    if not dry_run and plugins is None:
        metrics.observe_planning(time.perf_counter() - started)
        record_run(
            runtime.sessions,
            plugins=enabled,
            planned_for=now,
            batches=report.batches,
            occasions=Counter({p: sum(c.values()) for p, c in report.per_plugin.items()}),
            failures=report.failures,
        )
    return report


def _collect(
    plugin: CarePlugin,
    make_ctx: Callable[[Session], PlanContext],
    session: Session,
    id_range: tuple[int, int],
    report: PlanReport,
    isolation: _Isolation,
) -> list[Occasion]:
    """Run one plugin over one batch, isolating its failures (and hangs) from the rest of the run."""
    if plugin.name in isolation.abandoned:
        return []  # its abandoned thread may still be running; asking again would pile them up
    outcome = run_plugin_batch(
        plugin, make_ctx, isolation.sessions, budget_seconds=isolation.budget_seconds, commit=isolation.commit
    )
    if outcome.error is not None:
        note = f" (customer {outcome.customer})" if outcome.customer else ""
        lo, hi = id_range
        log.error(
            "care plugin %r failed on customers %s-%s%s: %s",
            *(plugin.name, lo, hi, note, outcome.error),
            exc_info=outcome.exception,
        )
        error = outcome.error
        if outcome.timed_out:
            isolation.abandoned.add(plugin.name)
            error += "; abandoned for the rest of this run"
        report.failures.append(PluginFailure(plugin.name, id_range, error, customer=outcome.customer))
        return []
    good = []
    lo, hi = id_range
    for occ in outcome.occasions:
        problem = _malformed(occ, lo, hi)
        if problem:
            who = (
                str(occ.customer.external_id)
                if isinstance(occ, Occasion) and isinstance(occ.customer, Customer)
                else None
            )
            report.failures.append(PluginFailure(plugin.name, id_range, problem, customer=who))
            continue
        adopted = _adopt(session, occ.customer)
        good.append(occ if adopted is occ.customer else replace(occ, customer=adopted))
    return good


def _for_audience(
    session: Session,
    found: list[tuple[CarePlugin, Occasion, PluginSettings]],
    report: PlanReport,
) -> list[tuple[CarePlugin, Occasion, PluginSettings]]:
    """Drop occasions for staff cards and for customers outside a plugin's ``segments`` setting."""
    limited = [o.customer.id for _, o, cfg in found if cfg.segments is not None]
    labels = load_labels(session, limited) if limited else {}
    kept = []
    for plugin, occ, cfg in found:
        if occ.customer.is_staff and not plugin.targets_staff:
            continue
        wanted = cfg.segments
        if wanted is not None and not matches(labels[occ.customer.id], wanted):
            report.count(plugin.name, "outside its segments")
            continue
        kept.append((plugin, occ, cfg))
    return kept


def _adopt(session: Session, customer: Customer) -> Customer:
    """The plugin's customer, fit for the batch: as is when it holds what planning reads, unchanged.

    A detached customer whose planning attributes (and center) were loaded in the plugin's
    session is used as it is: the planner only reads it. Anything else becomes an object
    of the batch's own session (merged), as does a customer the plugin changed.
    """
    state = inspect(customer)
    if state.detached and not state.modified and not (state.unloaded & PLANNING_READS):
        return customer
    try:
        return session.merge(customer, load=False)
    except InvalidRequestError:  # the plugin changed it without committing: take the stored row
        return session.merge(customer)


def _malformed(occ: Any, lo: int, hi: int) -> str | None:
    if not isinstance(occ, Occasion):
        return f"yielded {type(occ).__name__}, not an Occasion"
    if not isinstance(occ.customer, Customer) or not lo <= occ.customer.id <= hi:
        return "yielded an occasion for a customer outside its batch"
    if not isinstance(occ.key, str) or not isinstance(occ.period, str):
        return f"occasion key {occ.key!r} and period {occ.period!r} must be strings"
    if not occ.key or not occ.period or ":" in occ.key:
        return f"occasion key {occ.key!r} / period {occ.period!r} must be non-empty and the key free of ':'"
    if not isinstance(occ.due_date, date) or isinstance(occ.due_date, datetime):
        return f"occasion due_date {occ.due_date!r} must be a date"
    if occ.template is not None and not isinstance(occ.template, str):
        return f"occasion template {occ.template!r} must be a template name (str) or None"
    try:
        json.dumps(dict(occ.context))
    except (TypeError, ValueError) as exc:
        return f"occasion context is not plain JSON data: {exc}"
    return None


def _plan_batch(
    runtime: Runtime,
    session: Session,
    runs: list[PluginPass],
    report: PlanReport,
    *,
    now: datetime,
    day: date | None,
    id_range: tuple[int, int],
    center_tz: dict[int, str],
    dry_run: bool,
    isolation: _Isolation,
    center_ids: Collection[int] | None = None,
    clock: datetime | None = None,
) -> list[int]:
    found: list[tuple[CarePlugin, Occasion, PluginSettings]] = []
    for run in runs:
        # The plugin's worker thread supplies its own session.
        make_ctx = partial(
            PlanContext,
            now=now,
            day=day,
            id_range=id_range,
            settings=run.settings,
            default_timezone=center_tz,
        )
        collected = _collect(run.plugin, make_ctx, session, id_range, report, isolation)
        found.extend(
            (run.plugin, occ, run.settings)
            for occ in collected
            if run.center_ids is None or occ.customer.center_id in run.center_ids
        )
    if center_ids is not None:  # another center plans at its own local time
        found = [(plugin, occ, cfg) for plugin, occ, cfg in found if occ.customer.center_id in center_ids]
    audience = _for_audience(session, found, report)
    if not audience:
        return []
    routes = {code: runtime.channel_route(code) for code in runtime.settings.centers}
    # Only the consents choose_channel can ask about: the plugins' purposes, on the channels
    # of the centers' orders (a center without settings uses every channel) and the customers'
    # preferred ones.
    channels = {c for order, _ in routes.values() for c in order} | set(runtime.settings.channels)
    channels |= {occ.customer.preferred_channel for _, occ, _ in audience if occ.customer.preferred_channel}
    consents = load_consents(
        session,
        (occ.customer.id for _, occ, _ in audience),
        channels=channels,
        purposes={str(plugin.purpose) for plugin, _, _ in audience},
    )
    rows: list[PlannedRow] = []
    seen: set[str] = set()
    center_code: dict[str, str] = {}  # for metrics, labelled like deliveries
    for plugin, occ, cfg in audience:
        key = idempotency_key(plugin.name, occ)
        if key in seen:  # a plugin reporting the same occasion twice in one batch
            continue
        seen.add(key)
        customer = occ.customer
        center = customer.center
        center_code[key] = center.code
        order, unavailable = routes.get(center.code) or runtime.channel_route(center.code)
        choice = choose_channel(
            customer,
            plugin.purpose,
            order,
            consents,
            preferred=customer.preferred_channel,
            unavailable=unavailable,
        )
        rows.append(
            PlannedRow(
                idempotency_key=key,
                center_id=customer.center_id,
                customer_id=customer.id,
                plugin=plugin.name,
                occasion=occ.key,
                period=occ.period,
                purpose=str(plugin.purpose),
                priority=priority_of(plugin, cfg),
                due_date=occ.due_date,
                channel=choice.channel,
                recipient=choice.recipient,
                channel_reason=choice.why,
                template=occ.template or plugin.name,
                locale=customer.locale or center.locale,
                context=dict(occ.context),
                status=EventStatus.PLANNED if choice.channel else EventStatus.SUPPRESSED,
                status_reason=choice.reason,
                expires_at=occ.expires_at,
            )
        )
    # Expiry, bundling, the frequency cap (by priority) and quiet hours, in that order, decide
    # the final status of each row (careflow.policies.timing); bundle rows come out added.
    customers = {occ.customer.id: occ.customer for _, occ, _ in audience}
    standalone = {plugin.name for plugin, _, _ in audience if not plugin.bundles}
    rows = apply_timing_and_caps(runtime, session, rows, customers, now, standalone, clock=clock)
    for row in rows:  # bundle rows count under their customer's center too
        if row.idempotency_key not in center_code:
            center_code[row.idempotency_key] = customers[row.customer_id].center.code
    report.occasions += len(rows)
    report.keys.extend(r.idempotency_key for r in rows)
    if dry_run:
        return _preview(session, rows, report)
    new_ids: list[int] = []
    for start in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[start : start + _INSERT_CHUNK]
        inserted = insert_ignoring_duplicates(session, chunk)
        by_key = {row.idempotency_key: row for row in inserted}
        for row in chunk:
            hit = by_key.get(row.idempotency_key)
            if hit is None:
                report.already_recorded += 1
                report.earlier_keys.append(row.idempotency_key)
                report.count(row.plugin, "already recorded")
            elif hit.status == EventStatus.SUPPRESSED:
                report.new += 1
                report.suppressed += 1
                report.count(row.plugin, "suppressed")
                metrics.count_events(row.plugin, center_code[row.idempotency_key], "suppressed")
            elif hit.status != EventStatus.PLANNED:  # deferred or expired: nothing to queue now
                report.new += 1
                report.count(row.plugin, str(hit.status))
                metrics.count_events(row.plugin, center_code[row.idempotency_key], str(hit.status))
            else:
                report.new += 1
                report.count(row.plugin, "planned")
                metrics.count_events(row.plugin, center_code[row.idempotency_key], "planned")
                new_ids.append(hit.id)
    return new_ids


def _preview(session: Session, rows: list[PlannedRow], report: PlanReport) -> list[int]:
    keys = [r.idempotency_key for r in rows]
    existing = set(
        session.scalars(select(CareEvent.idempotency_key).where(CareEvent.idempotency_key.in_(keys)))
    )
    for row in rows:
        if row.idempotency_key in existing:
            report.already_recorded += 1
            report.earlier_keys.append(row.idempotency_key)
            report.count(row.plugin, "already recorded")
            continue
        report.new += 1
        outcome = str(row.status)
        report.suppressed += outcome == "suppressed"
        report.count(row.plugin, outcome)
        report.preview.append(row)
    return []
