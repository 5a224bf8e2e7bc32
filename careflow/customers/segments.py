"""Customer segments (A/B/C, warranty, activity, RFM), recomputed in set-based SQL each night.

Once per center and local day: the first planning run of the day refreshes a center's
segments and records that in ``scheduler_runs`` (job ``segments:<center>``); later runs that
day reuse them, unless customers, vehicles or visits changed since (any write to those
tables through a session clears the records, so the next run recomputes).

Every statement works on one center and one customer-id range, so the refresh is batchable:
the cost of a batch does not depend on how many customers the other batches hold. Ranked
figures (quintiles, percentiles) need the whole center, so their cut-off values are read
first, once per center, and the batches only compare against them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Date,
    Select,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
)
from sqlalchemy import event as sa_event
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction, object_session

from careflow.care import SEGMENT_DIMENSIONS
from careflow.config import SegmentSettings
from careflow.customers.dates import months_before
from careflow.hookspecs import hookimpl
from careflow.storage.job_runs import is_done, record_done
from careflow.storage.models import (
    CareEvent,
    Center,
    Customer,
    CustomerSegment,
    SchedulerRun,
    ServiceVisit,
    Vehicle,
)

# Labels a customer without a stored row has (a card created after tonight's refresh).
DEFAULT_LABELS = frozenset({"C", "no_vehicle", "no_visits"})


@dataclass(frozen=True)
class _Cutoffs:
    """Per-center thresholds read once before the batches run."""

    a_spend: Decimal | None  # percentiles method: spend at the A boundary
    b_spend: Decimal | None
    recency: list[date]  # lower bounds of quintiles 2..5
    frequency: list[int]
    monetary: list[Decimal]


def _activity_12m(center_id: int, since: date, id_range: tuple[int, int] | None = None) -> Select[Any]:
    """Visits and spend per customer over the 12-month window, plus the last visit ever."""
    in_window = ServiceVisit.date >= since
    query = (
        select(
            ServiceVisit.customer_id.label("customer_id"),
            func.sum(case((in_window, 1), else_=0)).label("visits"),
            func.coalesce(func.sum(case((in_window, ServiceVisit.amount), else_=0)), 0).label("spend"),
            func.max(ServiceVisit.date).label("last_visit"),
        )
        .join(Customer, Customer.id == ServiceVisit.customer_id)
        .where(Customer.center_id == center_id)
        .group_by(ServiceVisit.customer_id)
    )
    if id_range is not None:
        # Both sides: PostgreSQL otherwise joins every customer of the center in every batch.
        query = query.where(ServiceVisit.customer_id.between(*id_range), Customer.id.between(*id_range))
    return query


def _quintile_bounds(session: Session, column: Any, values: Select[Any]) -> list[Any]:
    """The smallest value of quintiles 2..5 (NTILE over the center's customers with visits)."""
    sub = values.subquery()
    tiled = select(sub.c[column].label("v"), func.ntile(5).over(order_by=sub.c[column]).label("q")).subquery()
    rows = session.execute(select(tiled.c.q, func.min(tiled.c.v)).group_by(tiled.c.q).order_by(tiled.c.q))
    return [v for q, v in rows if q > 1]


def _spend_at_top(session: Session, values: Select[Any], percent: float) -> Decimal | None:
    sub = values.subquery()
    active = select(func.count()).select_from(sub).where(sub.c.visits > 0)
    n = session.scalar(active) or 0
    if n == 0:
        return None
    rank = max(1, math.ceil(n * percent / 100))
    found = session.scalar(
        select(sub.c.spend).where(sub.c.visits > 0).order_by(sub.c.spend.desc()).offset(rank - 1).limit(1)
    )
    return Decimal(str(found)) if found is not None else None


def _score(value: ColumnElement[Any], bounds: list[Any]) -> ColumnElement[int]:
    """1-5: one more than the number of quintile lower bounds the value reaches; 1 without visits."""
    if not bounds:
        return case((value.is_(None), 1), else_=3)
    whens = [(value >= bound, 2 + i) for i, bound in reversed(list(enumerate(bounds)))]
    return case((value.is_(None), 1), *whens, else_=1)


def _read_cutoffs(session: Session, center_id: int, since: date, cfg: SegmentSettings) -> _Cutoffs:
    values = _activity_12m(center_id, since)
    percentiles = cfg.method == "percentiles"
    return _Cutoffs(
        a_spend=_spend_at_top(session, values, cfg.a_top_percent) if percentiles else None,
        b_spend=_spend_at_top(session, values, cfg.b_top_percent) if percentiles else None,
        recency=_quintile_bounds(session, "last_visit", values),
        frequency=_quintile_bounds(session, "visits", values),
        monetary=_quintile_bounds(session, "spend", values),
    )


def _tier(visits: ColumnElement[Any], spend: ColumnElement[Any], cfg: SegmentSettings, cut: _Cutoffs) -> Any:
    if cfg.method == "percentiles":
        if cut.a_spend is None or cut.b_spend is None:
            return literal("C")
        return case(
            (and_(visits > 0, spend >= cut.a_spend), "A"),
            (and_(visits > 0, spend >= cut.b_spend), "B"),
            else_="C",
        )
    return case(
        (and_(visits >= cfg.a_min_visits, spend >= cfg.a_min_spend), "A"),
        (or_(visits >= cfg.b_min_visits, spend >= cfg.b_min_spend), "B"),
        else_="C",
    )


SEGMENTS_JOB = "segments:"  # scheduler_runs.job prefix: a center's segments are fresh for that day
_STALE = "careflow.segments_stale"  # session.info flag: segment inputs were written
_INPUT_TABLES = frozenset({"customers", "vehicles", "service_visits"})


def refresh_segments(
    session: Session,
    cfg: SegmentSettings,
    *,
    now: datetime,
    day: date | None = None,
    only_stale: bool = False,
    center_codes: Iterable[str] | None = None,
    holder: str = "planning",
) -> int:
    """Recompute every customer's segments (staff cards excluded); returns how many rows were written.

    The caller commits. Each center is classified on its own local day. With ``only_stale``
    a center whose segments were already computed for that day (and whose customers,
    vehicles and visits have not changed since) is skipped; ``center_codes`` limits the
    refresh to those centers.
    """
    written = 0
    wanted = None if center_codes is None else set(center_codes)
    for center in session.scalars(select(Center).order_by(Center.id)):
        if wanted is not None and center.code not in wanted:
            continue
        today = day or now.astimezone(ZoneInfo(center.timezone)).date()
        job = f"{SEGMENTS_JOB}{center.code}"
        if only_stale and is_done(session, job, today):
            continue
        since = months_before(today, 12)
        lapsed_before = months_before(today, cfg.lapsed_after_months)
        cut = _read_cutoffs(session, center.id, since, cfg)
        lo, hi = session.execute(
            select(func.min(Customer.id), func.max(Customer.id)).where(Customer.center_id == center.id)
        ).one()
        if lo is None:
            continue
        for start in range(lo, hi + 1, cfg.batch_size):
            id_range = (start, min(start + cfg.batch_size - 1, hi))
            written += _refresh_batch(session, center.id, id_range, today, since, lapsed_before, cfg, cut)
        record_done(session, job, today, holder)
    session.info.pop(_STALE, None)  # this refresh's own reads and writes change no input
    return written


@sa_event.listens_for(Session, "after_flush")
def _note_changed_objects(session: Session, flush: UOWTransaction) -> None:
    """ORM writes to customers, vehicles or visits make today's segments out of date."""
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, Customer | Vehicle | ServiceVisit):
            session.info[_STALE] = True
            return


@sa_event.listens_for(Session, "do_orm_execute")
def _note_changed_rows(state: ORMExecuteState) -> None:
    """So do bulk INSERT/UPDATE/DELETE statements run through a session."""
    if not (state.is_insert or state.is_update or state.is_delete):
        return
    table = getattr(state.statement, "table", None)
    if getattr(table, "name", None) in _INPUT_TABLES:
        state.session.info[_STALE] = True


@sa_event.listens_for(Session, "before_commit")
def _forget_fresh_segments(session: Session) -> None:
    if session.info.pop(_STALE, False):
        session.execute(delete(SchedulerRun).where(SchedulerRun.job.startswith(SEGMENTS_JOB)))


def _refresh_batch(
    session: Session,
    center_id: int,
    id_range: tuple[int, int],
    today: date,
    since: date,
    lapsed_before: date,
    cfg: SegmentSettings,
    cut: _Cutoffs,
) -> int:
    in_range = Customer.id.between(*id_range)
    session.execute(
        delete(CustomerSegment)
        .where(
            CustomerSegment.customer_id.in_(
                select(Customer.id).where(Customer.center_id == center_id, in_range)
            )
        )
        .execution_options(synchronize_session=False)
    )
    agg = _activity_12m(center_id, since, id_range).subquery()
    visits = func.coalesce(agg.c.visits, 0)
    spend = func.coalesce(agg.c.spend, 0)
    last_visit = agg.c.last_visit
    # The batch's range inside the subqueries too: PostgreSQL may hash them whole (every vehicle)
    # once per batch, which grows with the customer count squared.
    batch_vehicles = Vehicle.customer_id.between(*id_range)
    has_vehicle = exists().where(Vehicle.customer_id == Customer.id, batch_vehicles)
    in_warranty = exists().where(
        Vehicle.customer_id == Customer.id, Vehicle.warranty_end >= today, batch_vehicles
    )
    rows = (
        select(
            Customer.id,
            _tier(visits, spend, cfg, cut),
            case((in_warranty, "warranty"), (has_vehicle, "out_of_warranty"), else_="no_vehicle"),
            case(
                (last_visit.is_(None), "no_visits"),
                (last_visit > lapsed_before, "active"),
                else_="lapsed",
            ),
            visits,
            spend,
            last_visit,
            _score(last_visit, cut.recency),
            case((visits == 0, 1), else_=_score(visits, cut.frequency)),
            case((visits == 0, 1), else_=_score(spend, cut.monetary)),
            literal(today, Date),
        )
        .select_from(Customer)
        .outerjoin(agg, agg.c.customer_id == Customer.id)
        .where(Customer.center_id == center_id, in_range, Customer.is_staff.is_(False))
    )
    columns = [
        "customer_id",
        "tier",
        "warranty",
        "activity",
        "visits_12m",
        "spend_12m",
        "last_visit",
        "recency",
        "frequency",
        "monetary",
        "computed_on",
    ]
    result = session.execute(insert(CustomerSegment).from_select(columns, rows))
    return int(getattr(result, "rowcount", 0) or 0)


def labels_of(segment: CustomerSegment | None) -> frozenset[str]:
    """The labels a plugin's ``segments`` setting is matched against."""
    if segment is None:
        return DEFAULT_LABELS
    return frozenset({segment.tier, segment.warranty, segment.activity})


def matches(labels: Iterable[str], wanted: Iterable[str]) -> bool:
    """Any wanted label per dimension, all dimensions named: ["A", "B", "lapsed"] = (A or B) and lapsed."""
    have = set(labels)
    wanted_set = set(wanted)
    for dimension in SEGMENT_DIMENSIONS.values():
        asked = wanted_set & dimension
        if asked and not asked & have:
            return False
    return True


def load_labels(session: Session, customer_ids: Iterable[int]) -> dict[int, frozenset[str]]:
    """Labels of many customers in one query per 5000 ids; unknown customers get the defaults."""
    ids = sorted(set(customer_ids))
    found: dict[int, frozenset[str]] = {i: DEFAULT_LABELS for i in ids}
    for start in range(0, len(ids), 5_000):
        chunk = ids[start : start + 5_000]
        for seg in session.scalars(select(CustomerSegment).where(CustomerSegment.customer_id.in_(chunk))):
            found[seg.customer_id] = labels_of(seg)
    return found


_PREFETCHED = "careflow.customers.segments"  # session.info key: customer id -> segment (or None)


def prefetch_segments(session: Session, customer_ids: Iterable[int]) -> None:
    """Load many customers' segments at once, so rendering each one's message costs no query.

    Remembers the customers that have none too (new since the last nightly refresh).
    """
    ids = sorted(set(customer_ids))
    found: dict[int, CustomerSegment | None] = dict.fromkeys(ids)
    for start in range(0, len(ids), 5_000):
        chunk = ids[start : start + 5_000]
        for segment in session.scalars(select(CustomerSegment).where(CustomerSegment.customer_id.in_(chunk))):
            found[segment.customer_id] = segment
    session.info.setdefault(_PREFETCHED, {}).update(found)


def segment_variables(segment: CustomerSegment | None) -> dict[str, Any]:
    """What templates see as ``segment``: plain data."""
    if segment is None:
        return {"tier": "C", "warranty": "no_vehicle", "activity": "no_visits", "rfm": None}
    return {
        "tier": segment.tier,
        "warranty": segment.warranty,
        "activity": segment.activity,
        "rfm": {"recency": segment.recency, "frequency": segment.frequency, "monetary": segment.monetary},
    }


@hookimpl
def careflow_template_context(event: CareEvent, customer: Customer) -> dict[str, Any] | None:
    """Every template sees ``segment`` (tier, warranty, activity, rfm) of its customer."""
    session = object_session(customer)
    if session is None:
        return {"segment": segment_variables(None)}
    prefetched = session.info.get(_PREFETCHED, {})
    if customer.id in prefetched:
        return {"segment": segment_variables(prefetched[customer.id])}
    return {"segment": segment_variables(session.get(CustomerSegment, customer.id))}
