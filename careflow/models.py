"""The relational model: centers, customer cards, vehicles, visits, consents and the care-event outbox."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """The current instant, timezone-aware in UTC (the only kind careflow stores)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores instants in UTC and always hands back aware datetimes, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: careflow stores only timezone-aware instants")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Reusable column types (after Warehouse's utils/db/types.py).
intpk = Annotated[int, mapped_column(Integer().with_variant(BigInteger(), "postgresql"), primary_key=True)]
created_at = Annotated[datetime, mapped_column(UTCDateTime(), default=utcnow, nullable=False)]
updated_at = Annotated[
    datetime, mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False)
]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class EventStatus(enum.StrEnum):
    """Lifecycle of a care event; the outbox row is the single source of truth."""

    PLANNED = "planned"  # recorded, waiting for a worker
    SENDING = "sending"  # claimed by one worker (compare-and-set)
    SENT = "sent"  # accepted by the provider
    DELIVERED = "delivered"  # provider confirmed delivery
    UNDELIVERED = "undelivered"  # provider reported it could not deliver
    FAILED = "failed"  # permanent error, or gave up after the last attempt
    SUPPRESSED = "suppressed"  # a policy decided not to send (reason recorded)


FINAL_STATUSES = frozenset(
    {
        EventStatus.SENT,
        EventStatus.DELIVERED,
        EventStatus.UNDELIVERED,
        EventStatus.FAILED,
        EventStatus.SUPPRESSED,
    }
)


class Center(Base):
    __tablename__ = "centers"

    id: Mapped[intpk]
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    locale: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[created_at]


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (
        UniqueConstraint("center_id", "external_id"),
        # The birthday plugin narrows candidates by month/day with this index.
        Index("ix_customers_birthday", "birth_month", "birth_day"),
    )

    id: Mapped[intpk]
    center_id: Mapped[int] = mapped_column(ForeignKey("centers.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(32))  # E.164
    email: Mapped[str | None] = mapped_column(String(320))
    birth_year: Mapped[int | None] = mapped_column(SmallInteger)
    birth_month: Mapped[int | None] = mapped_column(SmallInteger)
    birth_day: Mapped[int | None] = mapped_column(SmallInteger)
    locale: Mapped[str | None] = mapped_column(String(16))
    timezone: Mapped[str | None] = mapped_column(String(64))
    city: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]

    center: Mapped[Center] = relationship(lazy="joined")
    consents: Mapped[list[Consent]] = relationship(back_populates="customer", cascade="all, delete-orphan")

    @property
    def birthday(self) -> tuple[int, int] | None:
        if self.birth_month is None or self.birth_day is None:
            return None
        return (self.birth_month, self.birth_day)


class Purpose(enum.StrEnum):
    """Consent is given per purpose: service messages and marketing are separate choices."""

    SERVICE = "service"
    MARKETING = "marketing"


class Consent(Base):
    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("customer_id", "channel", "purpose"),)

    id: Mapped[intpk]
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str] = mapped_column(String(32))
    granted: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(64))  # "import", "reply:STOP", ...
    updated_at: Mapped[updated_at]

    customer: Mapped[Customer] = relationship(back_populates="consents")


class Vehicle(Base):
    __tablename__ = "vehicles"
    __table_args__ = (UniqueConstraint("customer_id", "plate"),)

    id: Mapped[intpk]
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    plate: Mapped[str] = mapped_column(String(32))
    vin: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(100))
    purchase_date: Mapped[date | None] = mapped_column(Date)
    warranty_end: Mapped[date | None] = mapped_column(Date, index=True)
    interval_months: Mapped[int | None] = mapped_column(SmallInteger)
    interval_km: Mapped[int | None] = mapped_column(Integer)


class ServiceVisit(Base):
    __tablename__ = "service_visits"
    __table_args__ = (Index("ix_service_visits_customer_date", "customer_id", "date"),)

    id: Mapped[intpk]
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    vehicle_id: Mapped[int | None] = mapped_column(ForeignKey("vehicles.id", ondelete="SET NULL"), index=True)
    date: Mapped[date] = mapped_column(Date, index=True)
    mileage: Mapped[int | None] = mapped_column(Integer)
    amount: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    kind: Mapped[str] = mapped_column(String(32))
    voucher_code: Mapped[str | None] = mapped_column(String(64))


class CareEvent(Base):
    """The outbox: one row per care occasion, recorded before anything is queued."""

    __tablename__ = "care_events"
    __table_args__ = (
        Index("ix_care_events_status_due", "status", "due_date"),
        Index("ix_care_events_customer_created", "customer_id", "created_at"),
    )

    id: Mapped[intpk]
    # plugin:occasion:period:customer, e.g. "birthday:birthday:2026:42"; UNIQUE makes re-runs no-ops.
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    center_id: Mapped[int] = mapped_column(ForeignKey("centers.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    plugin: Mapped[str] = mapped_column(String(64))
    occasion: Mapped[str] = mapped_column(String(64))
    period: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(SmallInteger, default=0)
    due_date: Mapped[date] = mapped_column(Date)  # the customer's local day the occasion falls on
    channel: Mapped[str | None] = mapped_column(String(32))
    recipient: Mapped[str | None] = mapped_column(String(320))
    template: Mapped[str] = mapped_column(String(200))
    locale: Mapped[str] = mapped_column(String(16))
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=EventStatus.PLANNED)
    status_reason: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    # The last attempt may have reached the provider: ask it before sending again.
    needs_reconcile: Mapped[bool] = mapped_column(Boolean, default=False)
    body: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    provider_message_id: Mapped[str | None] = mapped_column(String(64), index=True)
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]

    customer: Mapped[Customer] = relationship()


class PlanRun(Base):
    """One sharded ``careflow run``: the instant it plans for and how many shards it was split into."""

    __tablename__ = "plan_runs"

    id: Mapped[intpk]
    now: Mapped[datetime]  # the instant the run plans for (shards plan exactly this instant)
    day: Mapped[date | None] = mapped_column(Date)  # an explicit local day (backfill), or None
    shards: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[created_at]


class PlanShard(Base):
    """One customer id range of a sharded run, planned by whichever worker takes its message."""

    __tablename__ = "plan_shards"

    id: Mapped[intpk]
    run_id: Mapped[int] = mapped_column(ForeignKey("plan_runs.id", ondelete="CASCADE"), index=True)
    first_id: Mapped[int] = mapped_column(Integer().with_variant(BigInteger(), "postgresql"))
    last_id: Mapped[int] = mapped_column(Integer().with_variant(BigInteger(), "postgresql"))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending, running, done
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    # What the shard found, per plugin and outcome: {"birthday": {"planned": 12, ...}}.
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)  # the last failure, kept for the run's report
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
