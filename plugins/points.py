"""Points care: enough points for a voucher, points about to expire, a voucher about to expire unused."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from typing import Any, ClassVar

from pydantic import Field
from sqlalchemy import and_, func, select

from careflow import (
    CarePlugin,
    Customer,
    Occasion,
    PlanContext,
    PluginSettings,
    PointsEntry,
    PointsRules,
    Purpose,
    Voucher,
    hookimpl,
    voucher_lapsed,
)

THRESHOLD, POINTS_EXPIRING, VOUCHER_EXPIRING = "threshold", "points-expiring", "voucher-expiring"


class PointsSettings(PluginSettings, PointsRules):
    points_expiring_days: int = Field(
        default=30, ge=1, le=180, description="warn this long before points expire"
    )
    voucher_expiring_days: int = Field(
        default=14, ge=1, le=180, description="warn this long before a voucher expires"
    )


def crossing_entry(entries: list[PointsEntry], threshold: int, today: date) -> int | None:
    """The ledger entry at which the balance last rose to ``threshold`` or more (None if below now).

    Replays the ledger by date; an unspent lot leaves the balance on its expiry day (spending
    never touches expired lots, so what is left of a lot now is what expired then).
    """
    moves: list[tuple[date, int, int, int | None]] = []  # (day, order, change, entry id)
    for e in entries:
        moves.append((e.entry_date, 1, e.points, e.id))
        if e.points > 0 and e.expires_on is not None and e.expires_on <= today and e.remaining > 0:
            moves.append((e.expires_on, 0, -e.remaining, None))  # expiry happens as the day starts
    balance, crossed = 0, None
    for _day, _order, change, entry_id in sorted(moves, key=lambda m: (m[0], m[1], m[3] or 0)):
        before, balance = balance, balance + change
        if before < threshold <= balance:
            crossed = entry_id
        elif balance < threshold:
            crossed = None
    return crossed


class PointsPlugin(CarePlugin):
    name = "points"
    description = (
        "Tells customers when their points buy a voucher, when points are about to expire, "
        "and when a voucher is about to expire unused."
    )
    priority = 40
    purpose = Purpose.MARKETING
    settings_model = PointsSettings
    variables: ClassVar[Mapping[str, str]] = {
        "occasion": "threshold, points-expiring or voucher-expiring",
        "balance": "points the customer can spend today",
        "block_points": "points per voucher block",
        "blocks": "whole blocks the balance buys",
        "expiring_points": "points-expiring: how many expire",
        "expires_on": "points-expiring / voucher-expiring: the day (ISO date)",
        "voucher": "voucher-expiring: {code, kind, value}",
    }
    # Realistic values so template lint can trial-render every branch's variables.
    samples: ClassVar[Mapping[str, Any]] = {
        "occasion": "threshold",
        "balance": 1200,
        "block_points": 1000,
        "blocks": 1,
        "expiring_points": 300,
        "expires_on": "2026-12-31",
        "voucher": {"code": "V-7Q2K9", "kind": "repair", "value": 100},
    }

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        settings = ctx.settings
        assert isinstance(settings, PointsSettings)
        days = ctx.candidate_days()
        lo, hi = min(days), max(days)
        yield from self._threshold(ctx, settings, lo)
        yield from self._points_expiring(ctx, settings, lo, hi)
        yield from self._vouchers_expiring(ctx, settings, lo, hi)

    def _threshold(self, ctx: PlanContext, settings: PointsSettings, lo: date) -> Iterable[Occasion]:
        # Aggregated in SQL: only customers with enough live points are loaded.
        ids = list(
            ctx.session.scalars(
                select(PointsEntry.customer_id)
                .where(
                    ctx.in_batch(PointsEntry.customer_id),
                    PointsEntry.remaining > 0,
                    PointsEntry.expires_on > lo,
                )
                .group_by(PointsEntry.customer_id)
                .having(func.sum(PointsEntry.remaining) >= settings.block_points)
            )
        )
        if not ids:
            return
        ledgers: dict[int, list[PointsEntry]] = {}
        for entry in ctx.session.scalars(select(PointsEntry).where(PointsEntry.customer_id.in_(ids))):
            ledgers.setdefault(entry.customer_id, []).append(entry)
        for customer in ctx.session.scalars(
            select(Customer).where(Customer.id.in_(ids)).order_by(Customer.id)
        ):
            today = ctx.local_today(customer)
            entries = ledgers.get(customer.id, [])
            live = sum(
                e.remaining for e in entries if e.remaining > 0 and e.expires_on and e.expires_on > today
            )
            crossed = crossing_entry(entries, settings.block_points, today)
            if live < settings.block_points or crossed is None:
                continue
            yield Occasion(
                customer=customer,
                key=THRESHOLD,
                period=str(crossed),
                due_date=today,
                context={
                    "balance": live,
                    "block_points": settings.block_points,
                    "blocks": live // settings.block_points,
                    "voucher_values": {k: str(v) for k, v in settings.voucher_values.items()},
                },
            )

    def _points_expiring(
        self, ctx: PlanContext, settings: PointsSettings, lo: date, hi: date
    ) -> Iterable[Occasion]:
        window = timedelta(days=settings.points_expiring_days)
        # Narrowed by the expires_on index: only lots expiring soon are read.
        lots = ctx.session.execute(
            select(Customer, PointsEntry)
            .join(Customer, Customer.id == PointsEntry.customer_id)
            .where(
                ctx.in_batch(),
                ctx.in_batch(PointsEntry.customer_id),  # the (expires_on, customer_id) index
                PointsEntry.remaining > 0,
                PointsEntry.expires_on > lo,
                PointsEntry.expires_on <= hi + window,
            )
            .order_by(Customer.id, PointsEntry.expires_on, PointsEntry.id)
        ).all()
        by_customer: dict[int, tuple[Customer, list[PointsEntry]]] = {}
        for customer, lot in lots:
            by_customer.setdefault(customer.id, (customer, []))[1].append(lot)
        for customer, customer_lots in by_customer.values():
            today = ctx.local_today(customer)
            soon = [
                lot for lot in customer_lots if lot.expires_on and today < lot.expires_on <= today + window
            ]
            if not soon:
                continue
            first = soon[0].expires_on
            assert first is not None
            yield Occasion(
                customer=customer,
                key=POINTS_EXPIRING,
                period=first.isoformat(),
                due_date=today,
                context={
                    "expiring_points": sum(lot.remaining for lot in soon if lot.expires_on == first),
                    "expires_on": first.isoformat(),
                    "block_points": settings.block_points,
                },
                expires_at=ctx.start_of(customer, first),  # points lapse as their expiry day begins
            )

    def _vouchers_expiring(
        self, ctx: PlanContext, settings: PointsSettings, lo: date, hi: date
    ) -> Iterable[Occasion]:
        window = timedelta(days=settings.voucher_expiring_days)
        # A voucher is valid at the next maintenance visit only: once one happened, it lapsed.
        lapsed = voucher_lapsed()
        rows = ctx.session.execute(
            select(Customer, Voucher)
            .join(Customer, Customer.id == Voucher.customer_id)
            .where(
                ctx.in_batch(),
                ctx.in_batch(Voucher.customer_id),  # the (expires_on, customer_id) index
                and_(Voucher.used_visit_id.is_(None), Voucher.expires_on.between(lo, hi + window)),
                ~lapsed,
            )
            .order_by(Voucher.id)
        ).all()
        for customer, voucher in rows:
            today = ctx.local_today(customer)
            if not today <= voucher.expires_on <= today + window:
                continue
            context: dict[str, Any] = {
                "voucher": {"code": voucher.code, "kind": voucher.kind, "value": str(voucher.value)},
                "expires_on": voucher.expires_on.isoformat(),
            }
            yield Occasion(
                customer=customer,
                key=VOUCHER_EXPIRING,
                period=voucher.code,
                due_date=today,
                context=context,
                expires_at=ctx.end_of(customer, voucher.expires_on),  # valid through its expiry day
            )


@hookimpl(trylast=True)
def careflow_care_plugins() -> list[CarePlugin]:
    return [PointsPlugin()]
