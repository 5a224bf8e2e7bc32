"""Maintenance reminders: before, on and after the day service is due (time or mileage); warranty ending."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import ColumnElement, String, and_, cast, exists, func, literal, or_, select
from sqlalchemy.orm import selectinload

from careflow import (
    CareEvent,
    CarePlugin,
    Center,
    Customer,
    Occasion,
    PacedItem,
    PlanContext,
    PluginSettings,
    Purpose,
    Vehicle,
    Voucher,
    hookimpl,
    pace_to_capacity,
    voucher_lapsed,
)

SOON, DUE, OVERDUE, WARRANTY = "service-soon", "service-due", "service-overdue", "warranty-ending"
# Reminders that invite a booking and so take a slot of a center's daily capacity; a
# service-due reminder follows the service-soon that already took its cycle's slot.
PACED = (SOON, OVERDUE)


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
    overdue_reminder_days: list[int] = Field(
        default_factory=lambda: [7, 30],
        description="remind an overdue car this many days after the due date ([] for never)",
    )
    overdue_max_days: int = Field(
        default=365, ge=1, le=3650, description="a car overdue longer than this is no longer reminded"
    )

    @field_validator("overdue_reminder_days")
    @classmethod
    def _sorted_steps(cls, value: list[int]) -> list[int]:
        for days in value:
            if not 1 <= days <= 3650:
                raise ValueError(f"{days} is out of range; expected days after the due date, 1 to 3650")
        return sorted(set(value))

    @model_validator(mode="after")
    def _steps_within_max(self) -> MaintenanceSettings:
        if self.overdue_reminder_days and self.overdue_reminder_days[-1] > self.overdue_max_days:
            raise ValueError(
                f"overdue_reminder_days goes up to {self.overdue_reminder_days[-1]}, "
                f"past overdue_max_days ({self.overdue_max_days}): raise overdue_max_days or drop that step"
            )
        return self

    def overdue_step(self, days_overdue: int) -> int | None:
        """The overdue step that fits a car this many days past due: the latest one reached."""
        if days_overdue > self.overdue_max_days:
            return None
        reached = [step for step in self.overdue_reminder_days if step <= days_overdue]
        return reached[-1] if reached else None

    def capacity_for(self, center_code: str) -> int | None:
        own = self.centers.get(center_code)
        if own is not None and own.daily_capacity is not None:
            return own.daily_capacity
        return self.daily_capacity


def cycle_period(vehicle_id: int, cycle_start: date | None) -> str:
    """One service cycle of one vehicle: a new maintenance visit starts a new one."""
    return f"{vehicle_id}-{cycle_start.isoformat() if cycle_start else 'none'}"


def overdue_period(vehicle_id: int, cycle_start: date | None, step: int) -> str:
    """One overdue step of one cycle, e.g. ``42-2026-01-31+30d``: each step is sent once."""
    return f"{cycle_period(vehicle_id, cycle_start)}+{step}d"


def _overdue_step_recorded(plugin: str, step: int) -> ColumnElement[bool]:
    """SQL: this vehicle's current cycle already has its overdue ``step`` in the outbox.

    Built like ``scheduler.idempotency_key`` from ``overdue_period``, so the look-up is one
    probe of the unique key index, and a step once recorded is never loaded again.
    """
    cycle_start = func.coalesce(cast(Vehicle.next_service_from, String), "none")
    key = (
        literal(f"{plugin}:{OVERDUE}:")
        + cast(Vehicle.id, String)
        + "-"
        + cycle_start
        + f"+{step}d:"
        + cast(Vehicle.customer_id, String)
    )
    return exists().where(CareEvent.idempotency_key == key)


def _overdue_windows(
    plugin: str,
    settings: MaintenanceSettings,
    lo: date,
    hi: date,
    *,
    fell_ago: tuple[int, int | None] = (0, None),
) -> list[ColumnElement[bool]]:
    """SQL: vehicles whose overdue step fitting some day in ``[lo, hi]`` is not recorded yet.

    One due-date range per step (a car ``o`` days past due is at the latest step <= ``o``),
    so only cars with a step still to send are read: an overdue car already reminded at its
    step is never loaded. ``fell_ago`` keeps only steps whose day was that many days ago
    (least, most; None: any).
    """
    least, most = fell_ago
    steps = settings.overdue_reminder_days
    windows = []
    for i, step in enumerate(steps):
        # A car is at this step from ``step`` until the next step's day (or overdue_max_days).
        oldest = steps[i + 1] - 1 if i + 1 < len(steps) else settings.overdue_max_days
        if most is not None:
            oldest = min(oldest, step + most)
        first, last = lo - timedelta(days=oldest), hi - timedelta(days=step + least)
        if first <= last:
            windows.append(
                and_(Vehicle.next_service_due.between(first, last), ~_overdue_step_recorded(plugin, step))
            )
    return windows


@dataclass(frozen=True)
class ServiceReminder:
    """Which service reminder a vehicle gets today, and under which period."""

    key: str
    period: str
    days_overdue: int | None = None


@dataclass(frozen=True)
class CenterPlan:
    """A paced center's day: when each service-soon goes out, and which overdue catch-ups go today."""

    soon: dict[int, date]
    overdue_today: frozenset[int]


class MaintenancePlugin(CarePlugin):
    name = "maintenance"
    description = (
        "Reminds before and on the day service is due (by time or estimated mileage), "
        "paced to the center's daily capacity, then while it is overdue; and before the warranty ends."
    )
    priority = 80
    purpose = Purpose.SERVICE
    settings_model = MaintenanceSettings
    # The (next_service_due, customer_id) and (warranty_end, customer_id) indexes; overdue cars
    # only while a step is still to send (the outbox key index).
    narrows_in_sql = True
    variables: ClassVar[Mapping[str, str]] = {
        "occasion": "service-soon, service-due, service-overdue or warranty-ending",
        "plate": "the vehicle's plate",
        "model": "the vehicle's model, or null",
        "service_due": "the day service is due (ISO date)",
        "reason": "time or mileage: which interval makes it due",
        "days_left": "days from today until service is due (negative once it is past)",
        "days_overdue": "service-overdue: days since service was due",
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
        "days_overdue": 30,
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
        near = [
            Vehicle.next_service_due.between(
                lo - timedelta(days=settings.late_days), hi + timedelta(days=ahead)
            ),
            *_overdue_windows(self.name, settings, lo, hi),
        ]
        query = (
            select(Vehicle, Customer)
            .join(Customer, Customer.id == Vehicle.customer_id)
            .where(
                ctx.in_batch(),
                or_(
                    *[and_(window, batch) for window in near],
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
        plans: dict[int, CenterPlan] = {}
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
                reminder = self._service_reminder(ctx, settings, plans, vehicle, customer, today)
                if reminder is not None:
                    context: dict[str, Any] = {
                        **base,
                        "service_due": due.isoformat(),
                        "reason": vehicle.next_service_reason or "time",
                        "days_left": (due - today).days,
                    }
                    if reminder.days_overdue is not None:
                        context["days_overdue"] = reminder.days_overdue
                    yield Occasion(
                        customer=customer,
                        key=reminder.key,
                        period=reminder.period,
                        due_date=today,
                        context=context,
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

    def _service_reminder(
        self,
        ctx: PlanContext,
        settings: MaintenanceSettings,
        plans: dict[int, CenterPlan],
        vehicle: Vehicle,
        customer: Customer,
        today: date,
    ) -> ServiceReminder | None:
        """Which service reminder (if any) this vehicle gets today."""
        due = vehicle.next_service_due
        assert due is not None
        cycle = cycle_period(vehicle.id, vehicle.next_service_from)
        capacity = settings.capacity_for(customer.center.code)
        overdue = (today - due).days
        step = settings.overdue_step(overdue)
        if step is not None:
            # A step whose day has just come (or was missed by a few runs, like service-due)
            # always goes; an older one, as for a car first seen already overdue, is a
            # catch-up that a paced center sends only as its capacity allows.
            catching_up = due + timedelta(days=step + settings.late_days) < today
            if catching_up and capacity is not None:
                plan = self._plan(ctx, settings, plans, customer.center, capacity)
                if vehicle.id not in plan.overdue_today:
                    return None
            return ServiceReminder(
                OVERDUE, overdue_period(vehicle.id, vehicle.next_service_from, step), overdue
            )
        if 0 <= overdue <= settings.late_days:
            return ServiceReminder(DUE, cycle)
        if overdue > 0:
            return None
        if capacity is None:
            return (
                ServiceReminder(SOON, cycle) if today >= due - timedelta(days=settings.days_before) else None
            )
        send_on = self._plan(ctx, settings, plans, customer.center, capacity).soon.get(vehicle.id)
        if send_on is None:
            # Already reminded this cycle (a repeat is a no-op thanks to the outbox key), or
            # outside the center's window because the customer's day differs from the center's.
            send_on = due - timedelta(days=settings.days_before)
        return ServiceReminder(SOON, cycle) if send_on <= today else None

    def _plan(
        self,
        ctx: PlanContext,
        settings: MaintenanceSettings,
        plans: dict[int, CenterPlan],
        center: Center,
        capacity: int,
    ) -> CenterPlan:
        if center.id not in plans:
            plans[center.id] = _center_plan(ctx, settings, center, capacity, self.name)
        return plans[center.id]


def _center_plan(
    ctx: PlanContext, settings: MaintenanceSettings, center: Center, capacity: int, plugin: str
) -> CenterPlan:
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
                    CareEvent.plugin == plugin,
                    CareEvent.occasion == SOON,
                    CareEvent.center_id == center.id,
                    CareEvent.period.in_(wanted[start : start + 5_000]),
                )
            )
        )
    sent_today = ctx.session.scalar(
        select(func.count()).where(
            CareEvent.plugin == plugin,
            CareEvent.occasion.in_(PACED),
            CareEvent.center_id == center.id,
            CareEvent.due_date == today,
        )
    )
    items = [
        PacedItem(natural=due - timedelta(days=settings.days_before), item_id=vid)
        for vid, due, _ in window
        if due is not None and periods[vid] not in reminded
    ]
    # Overdue steps that have just fallen go today whatever the load, as do service-soon
    # reminders whose day has come; catch-ups (a car first seen long overdue, e.g. at go-live)
    # take what they leave of today, the longest overdue first, and the rest wait for a later day.
    of_center = and_(Customer.id == Vehicle.customer_id, Customer.center_id == center.id)
    fresh = _overdue_windows(plugin, settings, today, today, fell_ago=(0, settings.late_days))
    on_time = (
        ctx.session.scalar(
            select(func.count()).select_from(Vehicle).join(Customer, of_center).where(or_(*fresh))
        )
        if fresh
        else 0
    ) or 0
    due_now = sum(1 for item in items if item.natural <= today)
    free = capacity - int(sent_today or 0) - on_time - due_now
    old = _overdue_windows(plugin, settings, today, today, fell_ago=(settings.late_days + 1, None))
    overdue_today = (
        frozenset(
            ctx.session.scalars(
                select(Vehicle.id)
                .join(Customer, of_center)
                .where(or_(*old))
                .order_by(Vehicle.next_service_due, Vehicle.id)
                .limit(free)
            )
        )
        if old and free > 0
        else frozenset()
    )
    soon = pace_to_capacity(
        items,
        today=today,
        capacity=capacity,
        max_advance_days=settings.max_advance_days,
        reserved={today: int(sent_today or 0) + on_time + len(overdue_today)},
    )
    return CenterPlan(soon=soon, overdue_today=overdue_today)


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
