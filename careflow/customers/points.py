"""The points ledger and vouchers: earn per amount spent, spend oldest-expiring first, redeem, use once."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import ColumnElement, Exists, and_, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from careflow.config import Settings, format_validation_error
from careflow.customers.service_due import MAINTENANCE, add_months
from careflow.errors import CareflowError, ConfigError
from careflow.storage.models import Customer, PointsEntry, ServiceVisit, Voucher

VOUCHER_KINDS = ("repair", "accessory")
# No 0/O, 1/I/L: a code read out over the phone must not be misheard.
_CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"


class PointsError(CareflowError):
    """A points or voucher operation that cannot be done; the message says why."""


class PointsRules(BaseModel):
    """How a center's points programme works; read from ``[plugins.points]``."""

    yuan_per_point: Decimal = Field(default=Decimal(10), gt=0, description="amount spent for one point")
    expiry_months: int = Field(default=24, ge=1, le=120, description="points expire this long after earning")
    block_points: int = Field(default=1000, ge=1, description="points per voucher block")
    voucher_values: dict[str, Decimal] = Field(
        default_factory=lambda: {"repair": Decimal(100), "accessory": Decimal(100)},
        description="value of one block's voucher, per kind",
    )
    voucher_valid_days: int = Field(
        default=180, ge=1, le=3650, description="a voucher expires this long after"
    )


def points_rules(settings: Settings) -> PointsRules | None:
    """The points rules when the points programme is enabled, else None (nothing is earned)."""
    raw: dict[str, Any] = settings.plugins.get("points", {})
    if not raw.get("enabled", False):
        return None
    known = {k: v for k, v in raw.items() if k in PointsRules.model_fields}
    try:
        return PointsRules.model_validate(known)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "[plugins.points]")) from None


def points_for(amount: Decimal | None, rules: PointsRules) -> int:
    """Whole points earned for an amount (rounded down)."""
    if not amount or amount <= 0:
        return 0
    return int((amount / rules.yuan_per_point).to_integral_value(rounding=ROUND_FLOOR))


def earn_for_visit(session: Session, visit: ServiceVisit, rules: PointsRules) -> int:
    """Record (or correct) the points a visit earns; re-importing the visit never earns twice."""
    return earn_for_visits(session, [visit], rules)


def earn_for_visits(session: Session, visits: Sequence[ServiceVisit], rules: PointsRules) -> int:
    """``earn_for_visit`` for many (flushed) visits with one ledger query per 5,000; returns the change."""
    ids = [v.id for v in visits]
    entries: dict[int, PointsEntry] = {}
    for start in range(0, len(ids), 5_000):
        for found in session.scalars(
            select(PointsEntry).where(PointsEntry.visit_id.in_(ids[start : start + 5_000]))
        ):
            assert found.visit_id is not None
            entries[found.visit_id] = found
    change = 0
    for visit in visits:
        earned = points_for(visit.amount, rules)
        entry = entries.get(visit.id)
        if entry is None:
            if earned:
                session.add(
                    PointsEntry(
                        customer_id=visit.customer_id,
                        kind="earn",
                        points=earned,
                        remaining=earned,
                        entry_date=visit.date,
                        expires_on=add_months(visit.date, rules.expiry_months),
                        visit_id=visit.id,
                        reason=f"{visit.kind} visit on {visit.date.isoformat()}",
                    )
                )
                change += earned
            continue
        delta = earned - entry.points
        if delta:
            # A corrected amount corrects the lot; points already spent stay spent.
            entry.points = earned
            entry.remaining = max(0, entry.remaining + delta)
            entry.entry_date = visit.date
            entry.expires_on = add_months(visit.date, rules.expiry_months)
            change += delta
    return change


def live_lots(session: Session, customer_id: int, today: date) -> list[PointsEntry]:
    """Lots earned by ``today``, unspent and unexpired, in the order they are spent: soonest expiry first.

    Earned by ``today``: a redemption dated in the past (``points redeem --date``) cannot
    spend points from a visit that came after it.
    """
    return list(
        session.scalars(
            select(PointsEntry)
            .where(
                PointsEntry.customer_id == customer_id,
                PointsEntry.remaining > 0,
                PointsEntry.entry_date <= today,
                PointsEntry.expires_on > today,
            )
            .order_by(PointsEntry.expires_on, PointsEntry.id)
        )
    )


def balance(session: Session, customer_id: int, today: date) -> int:
    """Points the customer can spend on ``today``: earned by then, not yet spent or expired."""
    total = session.scalar(
        select(func.coalesce(func.sum(PointsEntry.remaining), 0)).where(
            PointsEntry.customer_id == customer_id,
            PointsEntry.remaining > 0,
            PointsEntry.entry_date <= today,
            PointsEntry.expires_on > today,
        )
    )
    return int(total or 0)


def _consume(session: Session, customer_id: int, points: int, today: date) -> None:
    """Take ``points`` from the lots that expire first (FIFO), or refuse when there are too few."""
    lots = live_lots(session, customer_id, today)
    available = sum(lot.remaining for lot in lots)
    if available < points:
        raise PointsError(f"not enough points: {points} needed, {available} available")
    left = points
    for lot in lots:
        take = min(lot.remaining, left)
        lot.remaining -= take
        left -= take
        if left == 0:
            break


def adjust(
    session: Session, customer: Customer, points: int, *, reason: str, today: date, rules: PointsRules
) -> PointsEntry:
    """Add (a new lot) or remove (oldest-expiring first) points by hand, with a reason."""
    if points == 0:
        raise PointsError("an adjustment of 0 points changes nothing")
    if not reason.strip():
        raise PointsError("say why: --reason is required")
    if points < 0:
        _consume(session, customer.id, -points, today)
    entry = PointsEntry(
        customer_id=customer.id,
        kind="adjust",
        points=points,
        remaining=max(points, 0),
        entry_date=today,
        expires_on=add_months(today, rules.expiry_months) if points > 0 else None,
        reason=reason.strip(),
    )
    session.add(entry)
    session.flush()
    return entry


def new_voucher_code(session: Session) -> str:
    """A random, unused code like ``V-7KQ2-MX9D``."""
    while True:
        raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(8))
        code = f"V-{raw[:4]}-{raw[4:]}"
        if session.scalar(select(Voucher.id).where(Voucher.code == code)) is None:
            return code


def redeem(
    session: Session,
    customer: Customer,
    *,
    kind: str,
    blocks: int,
    today: date,
    rules: PointsRules,
    at_visit: ServiceVisit | None = None,
) -> Voucher:
    """Turn whole blocks of points into one voucher valid at the customer's next maintenance visit.

    ``today`` is the day it is redeemed; ``at_visit`` the visit at whose checkout it was (on
    that day), which is never its "next maintenance visit".
    """
    if kind not in VOUCHER_KINDS:
        raise PointsError(f"unknown voucher kind {kind!r}; expected one of: {', '.join(VOUCHER_KINDS)}")
    if blocks < 1:
        raise PointsError("redeem at least one block")
    if at_visit is not None:
        if at_visit.customer_id != customer.id:
            raise PointsError("the visit belongs to another customer")
        if at_visit.date != today:
            raise PointsError(
                f"the visit is on {at_visit.date.isoformat()}, not on the redemption day {today.isoformat()}"
            )
    value = rules.voucher_values.get(kind)
    if value is None:
        raise PointsError(f"no value configured for {kind} vouchers ([plugins.points] voucher_values)")
    cost = blocks * rules.block_points
    _consume(session, customer.id, cost, today)
    voucher = Voucher(
        code=new_voucher_code(session),
        customer_id=customer.id,
        kind=kind,
        points=cost,
        value=value * blocks,
        issued_on=today,
        issued_visit_id=at_visit.id if at_visit is not None else None,
        expires_on=today + timedelta(days=rules.voucher_valid_days),
    )
    session.add(voucher)
    session.flush()
    session.add(
        PointsEntry(
            customer_id=customer.id,
            kind="redeem",
            points=-cost,
            remaining=0,
            entry_date=today,
            voucher_id=voucher.id,
            reason=f"{kind} voucher {voucher.code}",
        )
    )
    session.flush()
    return voucher


@dataclass(frozen=True)
class VisitForVoucher:
    """The visit a voucher is being recorded on (it may not be stored yet)."""

    customer_id: int
    date: date
    kind: str
    visit_id: int | None  # set when the visit already exists (a re-import)


def check_voucher(
    session: Session,
    code: str,
    visit: VisitForVoucher,
    *,
    other_maintenance_days: frozenset[date] = frozenset(),
) -> Voucher:
    """The voucher if it may be used on ``visit``, else PointsError saying why not.

    ``other_maintenance_days`` are maintenance visits of the same customer being recorded
    alongside (the same import file), which count as "the next maintenance visit" too.
    """
    voucher = session.scalar(select(Voucher).where(Voucher.code == code.strip().upper()))
    if voucher is None:
        raise PointsError("no such voucher")
    if voucher.customer_id != visit.customer_id:
        raise PointsError("this voucher belongs to another customer")
    if visit.kind != MAINTENANCE:
        raise PointsError(f"a voucher can be used only at a maintenance visit, not a {visit.kind} visit")
    if voucher.used_visit_id is not None and voucher.used_visit_id != visit.visit_id:
        raise PointsError(f"already used on {voucher.used_on.isoformat() if voucher.used_on else 'a visit'}")
    if visit.visit_id is not None and visit.visit_id == voucher.issued_visit_id:
        raise PointsError(
            "it was redeemed at this visit's checkout; it is valid from the customer's next maintenance visit"
        )
    if visit.date < voucher.issued_on:
        raise PointsError(f"the visit is before the voucher was issued ({voucher.issued_on.isoformat()})")
    if visit.date > voucher.expires_on:
        raise PointsError(f"expired on {voucher.expires_on.isoformat()}")
    earlier = session.scalar(
        select(func.min(ServiceVisit.date)).where(
            _next_maintenance_visits(voucher.customer_id, voucher.issued_on, visit.date)
        )
    )
    in_file = [d for d in other_maintenance_days if voucher.issued_on < d < visit.date]
    missed = min([d for d in (earlier, *in_file) if d is not None], default=None)
    if missed is not None:
        raise PointsError(
            "valid only at the customer's next maintenance visit after "
            f"{voucher.issued_on.isoformat()}, which was on {missed.isoformat()}"
        )
    return voucher


# Visits are dated by day, not by the minute, so which of two visits on one day came first is
# unknown. A voucher's "next maintenance visit" is therefore the first maintenance visit on a
# day after the one it was issued: a maintenance visit on the issuing day (never the visit it
# was redeemed at) may use it, but one that does not never uses up its chance. So a voucher
# redeemed at a visit's checkout stays valid whether or not that visit is recorded with it.


def _next_maintenance_visits(
    customer_id: int | InstrumentedAttribute[int],
    issued_on: date | InstrumentedAttribute[date],
    before: date | None = None,
) -> ColumnElement[bool]:
    """SQL: maintenance visits that count as the next one after a voucher's issue (before ``before``)."""
    conditions = [
        ServiceVisit.customer_id == customer_id,
        ServiceVisit.kind == MAINTENANCE,
        ServiceVisit.date > issued_on,
    ]
    if before is not None:
        conditions.append(ServiceVisit.date < before)
    return and_(*conditions)


def voucher_lapsed() -> Exists:
    """SQL: the voucher's next maintenance visit has happened, so it can no longer be used.

    Only for vouchers not used: a used voucher's own visit is its next maintenance visit.
    """
    later = _next_maintenance_visits(Voucher.customer_id, Voucher.issued_on)
    return select(ServiceVisit.id).where(later).exists()


def voucher_statuses(session: Session, vouchers: Sequence[Voucher], today: date) -> dict[int, str]:
    """What the CLI and the console say about each voucher: used, lapsed, expired or unused."""
    lapsed: dict[int, date] = {}
    unused = [v.id for v in vouchers if v.used_visit_id is None]
    if unused:
        rows = session.execute(
            select(Voucher.id, func.min(ServiceVisit.date))
            .join(ServiceVisit, _next_maintenance_visits(Voucher.customer_id, Voucher.issued_on))
            .where(Voucher.id.in_(unused), ServiceVisit.date <= Voucher.expires_on)
            .group_by(Voucher.id)
        )
        lapsed = {voucher_id: day for voucher_id, day in rows}
    found: dict[int, str] = {}
    for v in vouchers:
        if v.used_visit_id is not None or v.used_on is not None:
            found[v.id] = f"used {v.used_on.isoformat()}" if v.used_on else "used"
        elif v.id in lapsed:
            found[v.id] = f"lapsed: not used at the maintenance visit on {lapsed[v.id].isoformat()}"
        elif v.expires_on < today:
            found[v.id] = "expired"
        else:
            found[v.id] = "unused"
    return found


def use_voucher(voucher: Voucher, visit: ServiceVisit) -> None:
    """Mark a checked voucher as used on ``visit``."""
    voucher.used_visit_id = visit.id
    voucher.used_on = visit.date


def release_voucher(session: Session, visit_id: int) -> None:
    """A re-imported visit no longer carries its voucher: the voucher is unused again."""
    for voucher in session.scalars(select(Voucher).where(Voucher.used_visit_id == visit_id)):
        voucher.used_visit_id = None
        voucher.used_on = None
