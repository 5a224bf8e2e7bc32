"""``careflow points show|adjust|redeem``: a customer's points ledger and vouchers."""

from __future__ import annotations

from datetime import date, datetime

import click
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from careflow.cli.base import center_named, customer_by_external_id, friendly_errors, opened_runtime, out
from careflow.customers.import_customers import FieldProblem
from careflow.customers.import_records import center_today, parse_plate
from careflow.customers.points import (
    VOUCHER_KINDS,
    PointsRules,
    adjust,
    balance,
    points_rules,
    redeem,
    voucher_statuses,
)
from careflow.customers.service_due import VISIT_KINDS
from careflow.errors import CareflowError
from careflow.runtime import Runtime
from careflow.storage.models import Customer, PointsEntry, ServiceVisit, Vehicle, Voucher


def register(main: click.Group) -> None:
    """Add this module's commands to the ``careflow`` group (see careflow.cli.app)."""
    main.add_command(points)


def _rules(runtime: Runtime) -> PointsRules:
    rules = points_rules(runtime.settings)
    if rules is None:
        raise CareflowError(
            "the points programme is off: set [plugins.points] enabled = true in careflow.toml"
        )
    return rules


_center_option = click.option(
    "--center", "center_code", help="Center code from careflow.toml (default: the first)."
)


@click.group()
def points() -> None:
    """Loyalty points: balances, manual adjustments, and redeeming points for vouchers."""


@points.command(name="show")
@click.argument("customer_id")
@_center_option
@friendly_errors
def points_show(customer_id: str, center_code: str | None) -> None:
    """Show CUSTOMER_ID's balance, ledger (with expiry) and vouchers."""
    with opened_runtime() as runtime, runtime.sessions() as session:
        center = center_named(session, runtime.settings, center_code)
        customer = customer_by_external_id(session, center, customer_id)
        today = center_today(center)
        entries = session.scalars(
            select(PointsEntry).where(PointsEntry.customer_id == customer.id).order_by(PointsEntry.id)
        ).all()
        table = Table(
            title=f"{customer.name} ({customer.external_id}): {balance(session, customer.id, today)} points"
        )
        for col in ("date", "kind", "points", "left", "expires", "note"):
            table.add_column(col)
        for e in entries:
            left = ""
            if e.points > 0:
                expired = e.expires_on is not None and e.expires_on <= today and e.remaining > 0
                left = f"{e.remaining} expired" if expired else str(e.remaining)
            table.add_row(
                e.entry_date.isoformat(),
                e.kind,
                f"{e.points:+d}",
                left,
                e.expires_on.isoformat() if e.expires_on else "",
                e.reason or "",
            )
        out.print(table)
        vouchers = session.scalars(
            select(Voucher).where(Voucher.customer_id == customer.id).order_by(Voucher.id)
        ).all()
        if vouchers:
            vt = Table(title="vouchers (valid at the next maintenance visit)")
            for col in ("code", "kind", "value", "issued", "expires", "status"):
                vt.add_column(col)
            statuses = voucher_statuses(session, vouchers, today)
            for v in vouchers:
                vt.add_row(
                    v.code,
                    v.kind,
                    str(v.value),
                    v.issued_on.isoformat(),
                    v.expires_on.isoformat(),
                    statuses[v.id],
                )
            out.print(vt)


@points.command(name="adjust", context_settings={"ignore_unknown_options": True})
@click.argument("customer_id")
@click.argument("amount", type=int)
@click.option("--reason", required=True, help="Why (kept in the ledger).")
@_center_option
@friendly_errors
def points_adjust(customer_id: str, amount: int, reason: str, center_code: str | None) -> None:
    """Add (+N) or remove (-N) points by hand; removals take the soonest-expiring points first."""
    with opened_runtime() as runtime, runtime.sessions() as session:
        rules = _rules(runtime)
        center = center_named(session, runtime.settings, center_code)
        customer = customer_by_external_id(session, center, customer_id)
        today = center_today(center)
        adjust(session, customer, amount, reason=reason, today=today, rules=rules)
        session.commit()
        out.print(
            f"{customer.external_id}: {amount:+d} points; balance {balance(session, customer.id, today)}"
        )


@points.command(name="redeem")
@click.argument("customer_id")
@click.option("--kind", type=click.Choice(VOUCHER_KINDS), required=True, help="Voucher kind.")
@click.option(
    "--blocks", type=click.IntRange(min=1), default=1, show_default=True, help="Point blocks to convert."
)
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), help="Redemption date (default: today).")
@click.option(
    "--visit",
    "plate",
    help="Redeemed at the checkout of this vehicle's visit on --date (record the visit first).",
)
@_center_option
@friendly_errors
def points_redeem(
    customer_id: str,
    kind: str,
    blocks: int,
    day: datetime | None,
    plate: str | None,
    center_code: str | None,
) -> None:
    """Convert blocks of points into one voucher, valid at the customer's next maintenance visit.

    With --visit, the voucher is tied to the visit at whose checkout it was redeemed: that
    visit never counts as the "next maintenance visit".
    """
    with opened_runtime() as runtime, runtime.sessions() as session:
        rules = _rules(runtime)
        center = center_named(session, runtime.settings, center_code)
        customer = customer_by_external_id(session, center, customer_id)
        today = center_today(center)
        on = day.date() if day else today
        if on > today:
            raise CareflowError(f"--date {on.isoformat()} is in the future (today is {today.isoformat()})")
        at_visit = _checkout_visit(session, customer, plate, on) if plate is not None else None
        voucher = redeem(
            session, customer, kind=kind, blocks=blocks, today=on, rules=rules, at_visit=at_visit
        )
        session.commit()
        at = f" at the checkout of {at_visit.kind} visit {on.isoformat()}" if at_visit is not None else ""
        out.print(
            f"voucher {voucher.code}: {voucher.kind}, value {voucher.value}, "
            f"for {voucher.points} points{at}; "
            f"valid at {customer.external_id}'s next maintenance visit "
            f"until {voucher.expires_on.isoformat()}; "
            f"balance {balance(session, customer.id, today)}"
        )


def _checkout_visit(session: Session, customer: Customer, plate: str, on: date) -> ServiceVisit:
    """The visit of ``plate`` on ``on`` (the maintenance one if the car had several that day)."""
    try:
        wanted = parse_plate(plate)
    except FieldProblem as exc:
        raise CareflowError(f"--visit {plate!r}: {exc}") from None
    visits = session.scalars(
        select(ServiceVisit)
        .join(Vehicle, Vehicle.id == ServiceVisit.vehicle_id)
        .where(
            ServiceVisit.customer_id == customer.id,
            Vehicle.plate == wanted,
            ServiceVisit.date == on,
        )
    ).all()
    if not visits:
        raise CareflowError(
            f"--visit {plate!r}: {customer.external_id} has no visit with this plate on {on.isoformat()}; "
            "record it first with 'careflow visits add' (or give the right --date)"
        )
    return min(visits, key=lambda v: (VISIT_KINDS.index(v.kind) if v.kind in VISIT_KINDS else 99, v.id))
