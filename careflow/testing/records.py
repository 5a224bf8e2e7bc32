"""Test helpers for service records: vehicles and visits with the derived fields kept current."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy.orm import Session

from careflow.customers.import_records import refresh_service_due
from careflow.customers.points import PointsRules, earn_for_visit
from careflow.storage.models import Customer, ServiceVisit, Vehicle


def add_vehicle(
    session: Session,
    customer: Customer,
    *,
    plate: str = "沪A00001",
    model: str | None = "Camry",
    purchase_date: date | None = None,
    warranty_end: date | None = None,
    interval_months: int | None = 6,
    interval_km: int | None = 5_000,
) -> Vehicle:
    """One vehicle (flushed), with its next service date computed as the import would."""
    vehicle = Vehicle(
        customer_id=customer.id,
        plate=plate,
        model=model,
        purchase_date=purchase_date,
        warranty_end=warranty_end,
        interval_months=interval_months,
        interval_km=interval_km,
    )
    session.add(vehicle)
    session.flush()
    refresh_service_due(session, [vehicle.id])
    session.flush()
    return vehicle


def add_visit(
    session: Session,
    vehicle: Vehicle,
    *,
    day: date,
    kind: str = "maintenance",
    mileage: int | None = None,
    amount: Decimal | int | None = None,
    points: PointsRules | None = None,
) -> ServiceVisit:
    """One visit (flushed); earns points under ``points`` and refreshes the vehicle's due date."""
    visit = ServiceVisit(
        customer_id=vehicle.customer_id,
        vehicle_id=vehicle.id,
        date=day,
        kind=kind,
        mileage=mileage,
        amount=Decimal(amount) if amount is not None else None,
    )
    session.add(visit)
    session.flush()
    if points is not None:
        earn_for_visit(session, visit, points)
    refresh_service_due(session, [vehicle.id])
    session.flush()
    session.refresh(vehicle)
    return visit
