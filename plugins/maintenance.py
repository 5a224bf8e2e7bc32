"""Maintenance reminders: before and on the service due date (time or mileage), and before warranty ends."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import selectinload

from careflow.care import CarePlugin, Occasion, PlanContext, PluginSettings
from careflow.hookspecs import hookimpl
from careflow.models import CareEvent, Center, Customer, Purpose, Vehicle, Voucher
from careflow.pacing import PacedItem, pace
from careflow.points import voucher_lapsed

SOON, DUE, WARRANTY = "service-soon", "service-due", "warranty-ending"


class CenterPacing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    daily_capacity: int | None = Field(default=None, ge=1)


class MaintenanceSettings(PluginSettings):
    days_before: int = Field(default=7, ge=1, le=60, description="first reminder this many days before due")
    late_days: int = Field(
        default=3, ge=0, le=30, description="a missed due-day reminder still goes out this many days late"
    )
    warranty_days_before: int = Field(
        default=30, ge=1, le=180, description="remind once this many days before the warranty ends"
    )
    daily_capacity: int | None = Field(
        default=None, ge=1, description="maintenance bookings a center can take per day (pacing)"
    )
    max_advance_days: int = Field(
        default=14, ge=0, le=60, description="pacing sends a reminder at most this many days early"
    )
    centers: dict[str, CenterPacing] = Field(default_factory=dict, description="per-center daily_capacity")

    def capacity_for(self, center_code: str) -> int | None:
        own = self.centers.get(center_code)
        if own is not None and own.daily_capacity is not None:
            return own.daily_capacity
        return self.daily_capacity


def cycle_period(vehicle_id: int, cycle_start: date | None) -> str:
    """One service cycle of one vehicle: a new maintenance visit starts a new one."""
    return f"{vehicle_id}-{cycle_start.isoformat() if cycle_start else 'none'}"


class MaintenancePlugin(CarePlugin):
    name = "maintenance"
    description = (
        "Reminds before and on the day service is due (by time or estimated mileage), "
        "paced to the center's daily capacity; and before the warranty ends."
    )
    priority = 80
    purpose = Purpose.SERVICE
    settings_model = MaintenanceSettings
    narrows_in_sql = True  # the (next_service_due, customer_id) and (warranty_end, customer_id) indexes
    variables: ClassVar[Mapping[str, str]] = {
        "occasion": "service-soon, service-due or warranty-ending",
        "plate": "the vehicle's plate",
        "model": "the vehicle's model, or null",
        "service_due": "the day service is due (ISO date)",
        "reason": "time or mileage: which interval makes it due",
        "days_left": "days from today until service is due",
        "warranty_end": "the day the warranty ends (ISO date), or null",
        "vouchers": "unused vouchers: list of {code, kind, value, expires_on}",
    }
    # Realistic values so template lint can trial-render every branch's variables.
    samples: ClassVar[Mapping[str, Any]] = {
        "occasion": "service-soon",
        "plate": "沪A·12345",
        "model": "Camry",
        "service_due": "2026-06-01",
        "reason": "time",
        "days_left": 7,
        "warranty_end": "2026-07-01",
        "vouchers": [{"code": "V-7Q2K9", "kind": "repair", "value": 100, "expires_on": "2026-12-31"}],
    }

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        settings = ctx.settings
        assert isinstance(settings, MaintenanceSettings)
        days = ctx.candidate_days()
        lo, hi = min(days), max(days)
        paced = bool(settings.daily_capacity or any(c.daily_capacity for c in settings.centers.values()))
        ahead = settings.days_before + (settings.max_advance_days if paced else 0)
        # Narrowed by the (date, customer_id) indexes: only this batch's vehicles near a date load.
        batch = ctx.in_batch(Vehicle.customer_id)
        query = (
            select(Vehicle, Customer)
            .join(Customer, Customer.id == Vehicle.customer_id)
            .where(
                ctx.in_batch(),
                or_(
                    and_(
                        Vehicle.next_service_due.between(
                            lo - timedelta(days=settings.late_days), hi + timedelta(days=ahead)
                        ),
                        batch,
                    ),
                    and_(
                        Vehicle.warranty_end.between(lo, hi + timedelta(days=settings.warranty_days_before)),
                        batch,
                    ),
                ),
            )
            .order_by(Vehicle.id)
            .options(selectinload(Customer.center))  # the few centers in one query, not one join per row
        )
        rows = ctx.session.execute(query).all()
        if not rows:
            return
        vouchers = _vouchers(ctx, {c.id for _, c in rows}, lo)
        plans: dict[int, dict[int, date]] = {}
        for vehicle, customer in rows:
            today = ctx.local_today(customer)
            base = {
                "plate": vehicle.plate,
                "model": vehicle.model,
                "warranty_end": vehicle.warranty_end.isoformat() if vehicle.warranty_end else None,
                "vouchers": [
                    v for v in vouchers.get(customer.id, []) if v["expires_on"] >= today.isoformat()
                ],
            }
            due = vehicle.next_service_due
            if due is not None:
                key = self._service_key(ctx, settings, plans, vehicle, customer, today)
                if key is not None:
                    yield Occasion(
                        customer=customer,
                        key=key,
                        period=cycle_period(vehicle.id, vehicle.next_service_from),
                        due_date=today,
                        context={
                            **base,
                            "service_due": due.isoformat(),
                            "reason": vehicle.next_service_reason or "time",
                            "days_left": (due - today).days,
                        },
                    )
            end = vehicle.warranty_end
            if end is not None and today <= end <= today + timedelta(days=settings.warranty_days_before):
                yield Occasion(
                    customer=customer,
                    key=WARRANTY,
                    period=f"{vehicle.id}-{end.isoformat()}",
                    due_date=today,
                    context={
                        **base,
                        "service_due": due.isoformat() if due else None,
                        "reason": vehicle.next_service_reason,
                        "days_left": (end - today).days,
                    },
                )

    def _service_key(
        self,
        ctx: PlanContext,
        settings: MaintenanceSettings,
        plans: dict[int, dict[int, date]],
        vehicle: Vehicle,
        customer: Customer,
        today: date,
    ) -> str | None:
        """Which service reminder (if any) this vehicle gets today."""
        due = vehicle.next_service_due
        assert due is not None
        if due <= today <= due + timedelta(days=settings.late_days):
            return DUE
        if today >= due:
            return None
        capacity = settings.capacity_for(customer.center.code)
        if capacity is None:
            return SOON if today >= due - timedelta(days=settings.days_before) else None
        if customer.center_id not in plans:
            plans[customer.center_id] = _center_plan(ctx, settings, customer.center, capacity)
        send_on = plans[customer.center_id].get(vehicle.id)
        if send_on is None:
            # Already reminded this cycle (a repeat is a no-op thanks to the outbox key), or
            # outside the center's window because the customer's day differs from the center's.
            send_on = due - timedelta(days=settings.days_before)
        return SOON if send_on <= today else None


def _center_plan(
    ctx: PlanContext, settings: MaintenanceSettings, center: Center, capacity: int
) -> dict[int, date]:
    """The pacing plan of one center for its local today, over all its customers (not just this batch)."""
    today = ctx.day or ctx.now.astimezone(ZoneInfo(center.timezone)).date()
    horizon = today + timedelta(days=settings.days_before + settings.max_advance_days)
    window = ctx.session.execute(
        select(Vehicle.id, Vehicle.next_service_due, Vehicle.next_service_from)
        .join(Customer, Customer.id == Vehicle.customer_id)
        .where(
            Customer.center_id == center.id,
            Vehicle.next_service_due.between(today + timedelta(days=1), horizon),
        )
    ).all()
    periods = {vid: cycle_period(vid, start) for vid, _, start in window}
    reminded: set[str] = set()
    wanted = list(periods.values())
    for start in range(0, len(wanted), 5_000):
        reminded.update(
            ctx.session.scalars(
                select(CareEvent.period).where(
                    CareEvent.plugin == "maintenance",
                    CareEvent.occasion == SOON,
                    CareEvent.center_id == center.id,
                    CareEvent.period.in_(wanted[start : start + 5_000]),
                )
            )
        )
    sent_today = ctx.session.scalar(
        select(func.count()).where(
            CareEvent.plugin == "maintenance",
            CareEvent.occasion == SOON,
            CareEvent.center_id == center.id,
            CareEvent.due_date == today,
        )
    )
    items = [
        PacedItem(natural=due - timedelta(days=settings.days_before), item_id=vid)
        for vid, due, _ in window
        if due is not None and periods[vid] not in reminded
    ]
    return pace(
        items,
        today=today,
        capacity=capacity,
        max_advance_days=settings.max_advance_days,
        reserved={today: int(sent_today or 0)},
    )


def _vouchers(ctx: PlanContext, customer_ids: set[int], earliest: date) -> dict[int, list[dict[str, Any]]]:
    """Unused vouchers of the candidates, in one query (templates mention them)."""
    found: dict[int, list[dict[str, Any]]] = {}
    rows = ctx.session.scalars(
        select(Voucher)
        .where(
            Voucher.customer_id.in_(sorted(customer_ids)),
            and_(Voucher.used_visit_id.is_(None), Voucher.expires_on >= earliest),
            ~voucher_lapsed(),
        )
        .order_by(Voucher.expires_on, Voucher.id)
    )
    for v in rows:
        found.setdefault(v.customer_id, []).append(
            {"code": v.code, "kind": v.kind, "value": str(v.value), "expires_on": v.expires_on.isoformat()}
        )
    return found


@hookimpl(trylast=True)
def careflow_care_plugins() -> list[CarePlugin]:
    return [MaintenancePlugin()]
