"""Small helpers for tests: settings, a migrated runtime, centers, customers, visits, instants."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from careflow.config import Settings
from careflow.plugin_manager import load_plugins
from careflow.policies.consent import record_consent
from careflow.runtime import Runtime
from careflow.storage.models import Center, Customer, ServiceVisit

# What the ``careflow_make_runtime`` fixture hands a test: a call that builds a runtime.
RuntimeFactory = Callable[..., Runtime]


def make_settings(database_url: str, **sections: Any) -> Settings:
    """Settings for a test: the database, and any sections given as dicts (merged over defaults).

    Centers send around the clock unless the test sets ``send_from``/``send_until``: tests
    pretend an instant when they plan, while a worker sends at the real one, and quiet hours
    hold at the send too, so a test about something else must not depend on the hour it runs.
    """
    data: dict[str, Any] = {"database": {"url": database_url}, **sections}
    centers = {code: dict(cfg) for code, cfg in (data.pop("centers", None) or {"main": {}}).items()}
    for cfg in centers.values():
        if "send_from" not in cfg and "send_until" not in cfg:
            cfg.update(send_from="00:00", send_until="24:00")
    data["centers"] = centers
    return Settings.model_validate(data)


def build_runtime(
    settings: Settings, *, extra_plugins: Iterable[object] = (), entry_points: bool = True
) -> Runtime:
    """A migrated runtime; ``extra_plugins`` are registered like installed plugins."""
    registry = load_plugins(list(extra_plugins), entry_points_too=entry_points)
    return Runtime.build(settings, registry=registry, migrate_schema=True)


def center(session: Session, code: str | None = None) -> Center:
    query = select(Center) if code is None else select(Center).where(Center.code == code)
    return session.scalars(query.order_by(Center.id)).first() or _missing(code)


def _missing(code: str | None) -> Center:
    raise LookupError(f"no center {code!r}")


def add_customer(
    session: Session,
    *,
    external_id: str,
    name: str = "Test Customer",
    phone: str | None = "+8613800138000",
    email: str | None = None,
    birthday: tuple[int | None, int, int] | None = None,
    locale: str | None = "en",
    timezone: str | None = None,
    city: str | None = None,
    sms_consent: bool = True,
    email_consent: bool = False,
    center_code: str | None = None,
    whatsapp: str | None = None,
    whatsapp_consent: bool | None = None,
    preferred_channel: str | None = None,
) -> Customer:
    """Create one customer card with consents (flushed, not committed)."""
    year, month, day = birthday if birthday else (None, None, None)
    customer = Customer(
        center_id=center(session, center_code).id,
        external_id=external_id,
        name=name,
        phone=phone,
        email=email,
        birth_year=year,
        birth_month=month,
        birth_day=day,
        locale=locale,
        timezone=timezone,
        city=city,
        whatsapp=whatsapp,
        preferred_channel=preferred_channel,
    )
    session.add(customer)
    session.flush()
    record_consent(session, customer.id, "sms", granted=sms_consent, source="test")
    record_consent(session, customer.id, "email", granted=email_consent, source="test")
    if whatsapp_consent is not None:  # None: no WhatsApp consent recorded at all
        record_consent(session, customer.id, "whatsapp", granted=whatsapp_consent, source="test")
    session.flush()
    return customer


def parse_instant(text: str) -> datetime:
    """An aware instant from ISO-8601 text (tests read better with literal times)."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("give an offset, e.g. 2026-03-01T09:00:00+08:00")
    return value


@contextmanager
def loaded_customers() -> Iterator[list[str]]:
    """Collect the external ids of every Customer the ORM loads meanwhile (to prove SQL narrowing)."""
    seen: list[str] = []

    def on_load(target: Customer, _context: Any) -> None:
        # Once per customer: plugins run in a session of their own and the scheduler then
        # adopts their customers into its session (careflow.planning.isolation), a second "load"
        # of the same row without a second query.
        if target.external_id not in seen:
            seen.append(target.external_id)

    event.listen(Customer, "load", on_load)
    try:
        yield seen
    finally:
        event.remove(Customer, "load", on_load)


def add_visit(
    session: Session,
    customer: Customer,
    day: date,
    *,
    kind: str = "maintenance",
    amount: str | int | None = 500,
    mileage: int | None = None,
) -> ServiceVisit:
    """Record one service visit (flushed, not committed)."""
    visit = ServiceVisit(
        customer_id=customer.id,
        date=day,
        kind=kind,
        amount=Decimal(str(amount)) if amount is not None else None,
        mileage=mileage,
    )
    session.add(visit)
    session.flush()
    return visit
