"""Customer, vehicle and visit factories: realistic records in one line each, committed at once."""

from __future__ import annotations

import itertools
from datetime import date
from decimal import Decimal

from sqlalchemy.orm import Session, sessionmaker

from careflow.storage.models import Customer, ServiceVisit, Vehicle
from careflow.testing.helpers import add_customer

Birthday = date | str | tuple[int | None, int, int]


def _birthday(value: Birthday | None) -> tuple[int | None, int, int] | None:
    """``date(1990, 5, 11)``, ``"1990-05-11"``, ``"05-11"`` or ``(None, 5, 11)``."""
    if value is None or isinstance(value, tuple):
        return value
    if isinstance(value, date):
        return (value.year, value.month, value.day)
    parts = [int(p) for p in value.split("-")]
    if len(parts) == 2:
        return (None, parts[0], parts[1])
    if len(parts) == 3:
        return (parts[0], parts[1], parts[2])
    raise ValueError(f"birthday {value!r}: expected YYYY-MM-DD or MM-DD")


class Factories:
    """Each call writes one record in its own transaction and returns it (detached, fully loaded).

    Centers come from the settings (``[centers.<code>]``): build the runtime first.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._seq = itertools.count(1)

    def customer(
        self,
        external_id: str | None = None,
        *,
        name: str | None = None,
        phone: str | None = "auto",
        email: str | None = None,
        birthday: Birthday | None = None,
        locale: str | None = None,
        timezone: str | None = None,
        city: str | None = None,
        sms_consent: bool = True,
        email_consent: bool = False,
        center: str | None = None,
    ) -> Customer:
        """A customer card with consents; ``phone="auto"`` gives a unique mobile number.

        ``locale`` and ``timezone`` left as None mean "the center's", as for an imported card.
        """
        n = next(self._seq)
        with self._sessions.begin() as session:
            customer = add_customer(
                session,
                external_id=external_id or f"C{n:04d}",
                name=name or f"Customer {n}",
                phone=f"+86139{n:08d}" if phone == "auto" else phone,
                email=email,
                birthday=_birthday(birthday),
                locale=locale,
                timezone=timezone,
                city=city,
                sms_consent=sms_consent,
                email_consent=email_consent,
                center_code=center,
            )
            _ = customer.center.code  # loaded now: the object outlives its session
        return customer

    def vehicle(
        self,
        customer: Customer,
        *,
        plate: str | None = None,
        model: str | None = "Volkswagen Lavida",
        vin: str | None = None,
        purchase_date: date | None = None,
        warranty_end: date | None = None,
        interval_months: int | None = 6,
        interval_km: int | None = 10_000,
    ) -> Vehicle:
        """A vehicle of ``customer``."""
        n = next(self._seq)
        with self._sessions.begin() as session:
            vehicle = Vehicle(
                customer_id=customer.id,
                plate=plate or f"沪A{n:05d}",
                vin=vin,
                model=model,
                purchase_date=purchase_date,
                warranty_end=warranty_end,
                interval_months=interval_months,
                interval_km=interval_km,
            )
            session.add(vehicle)
        return vehicle

    def visit(
        self,
        customer: Customer,
        *,
        on: date,
        vehicle: Vehicle | None = None,
        mileage: int | None = None,
        amount: Decimal | int | str | None = None,
        kind: str = "maintenance",
        voucher_code: str | None = None,
    ) -> ServiceVisit:
        """A service visit of ``customer`` (to ``vehicle``, when given) on day ``on``."""
        with self._sessions.begin() as session:
            visit = ServiceVisit(
                customer_id=customer.id,
                vehicle_id=vehicle.id if vehicle is not None else None,
                date=on,
                mileage=mileage,
                amount=Decimal(str(amount)) if amount is not None else None,
                kind=kind,
                voucher_code=voucher_code,
            )
            session.add(visit)
        return visit
