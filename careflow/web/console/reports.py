"""Numbers for the dashboard and the events page, always narrowed to one center."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Date, Table, func, inspect, select
from sqlalchemy.orm import Session

from careflow.customers.points import voucher_statuses
from careflow.storage.models import Base, CareEvent, Consent, Customer, EventStatus, Voucher

DASHBOARD_STATUSES = ("planned", "sent", "delivered", "failed", "suppressed")


def daily_counts(
    session: Session, center_id: int, first: date, last: date
) -> dict[str, dict[str, dict[str, int]]]:
    """plugin -> status -> ISO day -> events due that day (sending/undelivered fold into sent/failed)."""
    rows = session.execute(
        select(CareEvent.plugin, CareEvent.status, CareEvent.due_date, func.count(CareEvent.id))
        .where(CareEvent.center_id == center_id, CareEvent.due_date.between(first, last))
        .group_by(CareEvent.plugin, CareEvent.status, CareEvent.due_date)
    )
    fold: dict[str, str] = {EventStatus.SENDING: "planned", EventStatus.UNDELIVERED: "failed"}
    result: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for plugin, status, day, count in rows:
        result[plugin][fold.get(status, status)][day.isoformat()] += int(count)
    return result


def opt_outs(session: Session, center_id: int, first: date, last: date) -> dict[str, int]:
    """ISO day -> consents withdrawn by the customer (a STOP reply or similar) that day."""
    # Typed as Date so that both SQLite (text) and PostgreSQL (date) compare it with date bounds.
    day = func.date(Consent.updated_at, type_=Date)
    rows = session.execute(
        select(day, func.count(Consent.id))
        .join(Customer, Customer.id == Consent.customer_id)
        .where(
            Customer.center_id == center_id,
            Consent.granted.is_(False),
            Consent.source.like("reply%"),
            day.between(first, last),
        )
        .group_by(day)
    )
    return {str(day)[:10]: int(count) for day, count in rows}


def days_between(first: date, last: date) -> list[str]:
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def optional_table(session: Session, name: str) -> Table | None:
    """A table another part of careflow may add (points, vouchers, surveys), if this database has it."""
    table = Base.metadata.tables.get(name)
    # Inspect on the session's own connection: on SQLite a second connection would wait for
    # the write lock this session's transaction holds.
    if table is None or not inspect(session.connection()).has_table(name):
        return None
    return table


def survey_scores(session: Session, center_id: int, first: date, last: date) -> list[tuple[str, float]]:
    """Average survey score per day (by when the rating arrived), from ``survey_responses``."""
    table = optional_table(session, "survey_responses")
    if table is None or not {"score", "center_id", "received_at"} <= set(table.c.keys()):
        return []
    day = func.date(table.c.received_at, type_=Date)
    rows = session.execute(
        select(day, func.avg(table.c.score))
        .where(table.c.center_id == center_id, day.between(first, last))
        .group_by(day)
        .order_by(day)
    )
    return [(str(d)[:10], float(avg)) for d, avg in rows if avg is not None]


def customer_extras(
    session: Session, customer_id: int, today: date | None = None
) -> list[tuple[str, list[dict[str, Any]]]]:
    """Rows of optional per-customer tables (points ledger, vouchers, ...) for the customer card.

    Vouchers carry the status ``careflow points show`` gives them on ``today`` (used, lapsed,
    expired, unused), so the card and the CLI never disagree about whether one can be used.
    """
    found = []
    for name in ("points_ledger", "points_entries", "vouchers", "survey_responses"):
        table = optional_table(session, name)
        if table is None or "customer_id" not in table.c:
            continue
        rows = session.execute(select(table).where(table.c.customer_id == customer_id).limit(50)).mappings()
        found.append((name, [dict(r) for r in rows]))
    if today is not None:
        for name, shown in found:
            if name == "vouchers" and shown:
                vouchers = session.scalars(
                    select(Voucher).where(Voucher.id.in_([r["id"] for r in shown]))
                ).all()
                statuses = voucher_statuses(session, vouchers, today)
                for row in shown:
                    row["status"] = statuses.get(row["id"], "")
    return found
