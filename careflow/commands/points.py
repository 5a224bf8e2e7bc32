"""``careflow points show|adjust|redeem``: a customer's points ledger and vouchers."""

from __future__ import annotations

import click
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from careflow.cli import _center, _friendly_errors, main, opened_runtime, out
from careflow.errors import CareflowError
from careflow.models import Center, Customer, PointsEntry, Voucher
from careflow.points import VOUCHER_KINDS, PointsRules, adjust, balance, points_rules, redeem
from careflow.records import center_today
from careflow.runtime import Runtime


def _rules(runtime: Runtime) -> PointsRules:
    rules = points_rules(runtime.settings)
    if rules is None:
        raise CareflowError(
            "the points programme is off: set [plugins.points] enabled = true in careflow.toml"
        )
    return rules


def _customer(session: Session, center: Center, external_id: str) -> Customer:
    customer = session.scalar(
        select(Customer).where(Customer.center_id == center.id, Customer.external_id == external_id)
    )
    if customer is None:
        raise CareflowError(f"no customer {external_id!r} in center {center.code}")
    return customer


_center_option = click.option(
    "--center", "center_code", help="Center code from careflow.toml (default: the first)."
)


@main.group()
def points() -> None:
    """Loyalty points: balances, manual adjustments, and redeeming points for vouchers."""


@points.command(name="show")
@click.argument("customer_id")
@_center_option
@_friendly_errors
def points_show(customer_id: str, center_code: str | None) -> None:
    """Show CUSTOMER_ID's balance, ledger (with expiry) and vouchers."""
    with opened_runtime() as runtime, runtime.sessions() as session:
        center = _center(session, runtime.settings, center_code)
        customer = _customer(session, center, customer_id)
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
            for v in vouchers:
                status = (
                    f"used {v.used_on.isoformat()}"
                    if v.used_on
                    else ("expired" if v.expires_on < today else "unused")
                )
                vt.add_row(
                    v.code, v.kind, str(v.value), v.issued_on.isoformat(), v.expires_on.isoformat(), status
                )
            out.print(vt)


@points.command(name="adjust", context_settings={"ignore_unknown_options": True})
@click.argument("customer_id")
@click.argument("amount", type=int)
@click.option("--reason", required=True, help="Why (kept in the ledger).")
@_center_option
@_friendly_errors
def points_adjust(customer_id: str, amount: int, reason: str, center_code: str | None) -> None:
    """Add (+N) or remove (-N) points by hand; removals take the soonest-expiring points first."""
    with opened_runtime() as runtime, runtime.sessions() as session:
        rules = _rules(runtime)
        center = _center(session, runtime.settings, center_code)
        customer = _customer(session, center, customer_id)
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
@_center_option
@_friendly_errors
def points_redeem(customer_id: str, kind: str, blocks: int, center_code: str | None) -> None:
    """Convert blocks of points into one voucher, valid at the customer's next maintenance visit."""
    with opened_runtime() as runtime, runtime.sessions() as session:
        rules = _rules(runtime)
        center = _center(session, runtime.settings, center_code)
        customer = _customer(session, center, customer_id)
        today = center_today(center)
        voucher = redeem(session, customer, kind=kind, blocks=blocks, today=today, rules=rules)
        session.commit()
        out.print(
            f"voucher {voucher.code}: {voucher.kind}, value {voucher.value}, for {voucher.points} points; "
            f"valid at {customer.external_id}'s next maintenance visit "
            f"until {voucher.expires_on.isoformat()}; "
            f"balance {balance(session, customer.id, today)}"
        )
