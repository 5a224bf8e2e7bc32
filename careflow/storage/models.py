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
    Float,
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
    false,
    text,
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
    DEFERRED = "deferred"  # due outside the center's sending hours; released at ``not_before``
    EXPIRED = "expired"  # no longer relevant when it could have been sent (reason recorded)


FINAL_STATUSES = frozenset(
    {
        EventStatus.SENT,
        EventStatus.DELIVERED,
        EventStatus.UNDELIVERED,
        EventStatus.FAILED,
        EventStatus.SUPPRESSED,
        EventStatus.EXPIRED,
    }
)


class Center(Base):
    __tablename__ = "centers"

    id: Mapped[intpk]
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    locale: Mapped[str] = mapped_column(String(16))
    # ISO 3166 alpha-2 (GB, CN): phone numbers written without + are read in this country.
    country: Mapped[str | None] = mapped_column(String(2))
    created_at: Mapped[created_at]


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (
        UniqueConstraint("center_id", "external_id"),
        # The birthday plugin narrows candidates by month/day with these indexes; the id makes
        # each planning window (an id range) read only its own entries, not the whole day's.
        Index("ix_customers_birthday_id", "birth_month", "birth_day", "id"),
        # The weather plugin loads the customers of the cities under an alert, window by window.
        Index("ix_customers_city_id", "city", "id"),
        # The few staff cards (survey follow-ups), found without reading a window's customers.
        Index(
            "ix_customers_staff",
            "id",
            sqlite_where=text("is_staff IS 1"),
            postgresql_where=text("is_staff IS true"),
        ),
        # The few customers with a time zone of their own, or a lunar calendar, looked up on
        # other days than their center's: small partial indexes, so those days cost little.
        Index(
            "ix_customers_birthday_own_tz",
            "birth_month",
            "birth_day",
            "id",
            sqlite_where=text("timezone IS NOT NULL"),
            postgresql_where=text("timezone IS NOT NULL"),
        ),
        # Inbound replies (STOP, HELP, ratings) are matched to cards by the address they came from.
        Index("ix_customers_phone", "phone"),
        Index("ix_customers_whatsapp", "whatsapp"),
        Index(
            "ix_customers_birthday_lunar",
            "birth_month",
            "birth_day",
            "id",
            sqlite_where=text("birthday_calendar = 'lunar'"),
            postgresql_where=text("birthday_calendar = 'lunar'"),
        ),
    )

    id: Mapped[intpk]
    center_id: Mapped[int] = mapped_column(ForeignKey("centers.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(32))  # E.164
    email: Mapped[str | None] = mapped_column(String(320))
    whatsapp: Mapped[str | None] = mapped_column(String(32))  # E.164, without the "whatsapp:" prefix
    preferred_channel: Mapped[str | None] = mapped_column(String(16))  # sms, whatsapp or email
    birth_year: Mapped[int | None] = mapped_column(SmallInteger)
    birth_month: Mapped[int | None] = mapped_column(SmallInteger)
    birth_day: Mapped[int | None] = mapped_column(SmallInteger)
    locale: Mapped[str | None] = mapped_column(String(16))
    timezone: Mapped[str | None] = mapped_column(String(64))
    city: Mapped[str | None] = mapped_column(String(100))
    # "lunar" when birth_month/birth_day are a Chinese lunar date (greeted on its solar date).
    birthday_calendar: Mapped[str | None] = mapped_column(String(8))
    # An internal card for a center's staff (survey follow-ups go to it); never a care target.
    is_staff: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]

    center: Mapped[Center] = relationship(lazy="joined")
    consents: Mapped[list[Consent]] = relationship(back_populates="customer", cascade="all, delete-orphan")

    @property
    def birthday(self) -> tuple[int, int] | None:
        if self.birth_month is None or self.birth_day is None:
            return None
        return (self.birth_month, self.birth_day)


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


class ConsentChange(Base):
    """One change of one consent, never updated or deleted: the history a card shows and an audit reads.

    Its id grows with every change, so "any withdrawal since id N?" is one indexed range read:
    delivery asks it just before each send (see ``careflow.policies.consent.withdrawals_since``).
    """

    __tablename__ = "consent_changes"
    __table_args__ = (Index("ix_consent_changes_customer_id", "customer_id", "id"),)

    id: Mapped[intpk]
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str] = mapped_column(String(32))
    granted: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(64))  # "import", "reply:STOP", "re-consent", ...
    actor: Mapped[str | None] = mapped_column(String(320))  # who recorded it: a user, "customer", a file
    note: Mapped[str | None] = mapped_column(Text)  # e.g. the evidence of a re-consent
    effective_at: Mapped[datetime]  # when the customer gave or withdrew it (a re-consent names its date)
    recorded_at: Mapped[created_at]


class AddressOptOut(Base):
    """A customer's own opt-out, kept by the address it came from as well as on the card.

    So a card imported later with the same phone or e-mail (a second card, a re-created one)
    is not granted consent the customer withdrew. The address is stored hashed.
    """

    __tablename__ = "address_opt_outs"
    __table_args__ = (UniqueConstraint("channel", "address_hash", "purpose"),)

    id: Mapped[intpk]
    channel: Mapped[str] = mapped_column(String(32))
    address_hash: Mapped[str] = mapped_column(String(64))  # sha256, see careflow.policies.consent.address_key
    purpose: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(64))  # "reply:STOP", "unsubscribe-link", ...
    created_at: Mapped[created_at]


class Vehicle(Base):
    __tablename__ = "vehicles"
    __table_args__ = (
        UniqueConstraint("customer_id", "plate"),
        # Date first, then the customer: a planning window reads only its own near-due vehicles.
        Index("ix_vehicles_next_service_due_customer", "next_service_due", "customer_id"),
        Index("ix_vehicles_warranty_end_customer", "warranty_end", "customer_id"),
    )

    id: Mapped[intpk]
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    plate: Mapped[str] = mapped_column(String(32))
    vin: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(100))
    purchase_date: Mapped[date | None] = mapped_column(Date)
    warranty_end: Mapped[date | None] = mapped_column(Date)
    interval_months: Mapped[int | None] = mapped_column(SmallInteger)
    interval_km: Mapped[int | None] = mapped_column(Integer)
    # Kept current by careflow.customers.import_records whenever the vehicle or its visits change, so the
    # maintenance plugin narrows candidates with an index instead of replaying every history.
    next_service_due: Mapped[date | None] = mapped_column(Date)
    next_service_reason: Mapped[str | None] = mapped_column(String(16))  # "time" or "mileage"
    # The last maintenance visit (or purchase date) the due date counts from: a new visit, a new cycle.
    next_service_from: Mapped[date | None] = mapped_column(Date)


class ServiceVisit(Base):
    __tablename__ = "service_visits"
    __table_args__ = (
        Index("ix_service_visits_customer_date", "customer_id", "date"),
        Index("ix_service_visits_date_customer", "date", "customer_id"),  # surveys: visits of one day
        # Re-importing a visit updates it: one visit per customer, vehicle, day and kind.
        UniqueConstraint("customer_id", "vehicle_id", "date", "kind"),
    )

    id: Mapped[intpk]
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    vehicle_id: Mapped[int | None] = mapped_column(ForeignKey("vehicles.id", ondelete="SET NULL"), index=True)
    date: Mapped[date] = mapped_column(Date)
    mileage: Mapped[int | None] = mapped_column(Integer)
    amount: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    kind: Mapped[str] = mapped_column(String(32))
    voucher_code: Mapped[str | None] = mapped_column(String(64))


class Voucher(Base):
    """A repair or accessory voucher bought with points, valid only at the next maintenance visit."""

    __tablename__ = "vouchers"
    __table_args__ = (Index("ix_vouchers_expires_customer", "expires_on", "customer_id"),)

    id: Mapped[intpk]
    code: Mapped[str] = mapped_column(String(32), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "repair" or "accessory"
    points: Mapped[int] = mapped_column(Integer)
    value: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    issued_on: Mapped[date] = mapped_column(Date)
    # The visit at whose checkout it was redeemed: never "the next maintenance visit" itself.
    issued_visit_id: Mapped[int | None] = mapped_column(ForeignKey("service_visits.id", ondelete="SET NULL"))
    expires_on: Mapped[date] = mapped_column(Date)
    used_visit_id: Mapped[int | None] = mapped_column(
        ForeignKey("service_visits.id", ondelete="SET NULL"), unique=True
    )
    used_on: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[created_at]


class PointsEntry(Base):
    """One line of a customer's points ledger; positive lines are lots consumed oldest-expiry first."""

    __tablename__ = "points_ledger"
    __table_args__ = (
        Index("ix_points_ledger_customer_expires", "customer_id", "expires_on"),
        Index("ix_points_ledger_expires_customer", "expires_on", "customer_id"),  # lots expiring soon
    )

    id: Mapped[intpk]
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # earn, adjust, redeem
    points: Mapped[int] = mapped_column(Integer)  # signed
    # What is left of a positive lot; expired lots keep theirs (they can no longer be spent).
    remaining: Mapped[int] = mapped_column(Integer, default=0)
    entry_date: Mapped[date] = mapped_column(Date)
    expires_on: Mapped[date | None] = mapped_column(Date)
    # UNIQUE: a visit earns once however often it is re-imported.
    visit_id: Mapped[int | None] = mapped_column(
        ForeignKey("service_visits.id", ondelete="CASCADE"), unique=True
    )
    voucher_id: Mapped[int | None] = mapped_column(ForeignKey("vouchers.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[created_at]


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
    # Why this channel (or none): "preferred whatsapp", "sms: no phone; fell back to email".
    channel_reason: Mapped[str | None] = mapped_column(Text)
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
    html_body: Mapped[str | None] = mapped_column(Text)  # e-mail only: the HTML alternative
    provider_message_id: Mapped[str | None] = mapped_column(String(64), index=True)
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    # Quiet hours: a deferred event is released (planned and queued) at this instant.
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    # After this instant the occasion is no longer worth sending (e.g. a passed weather alert).
    expires_at: Mapped[datetime | None]
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]

    customer: Mapped[Customer] = relationship()


class Reply(Base):
    """An inbound message from a customer (or an unknown sender), stored before any reaction."""

    __tablename__ = "replies"

    id: Mapped[intpk]
    # Twilio's MessageSid; UNIQUE so a retried webhook stores the reply once.
    provider_message_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), index=True
    )
    center_id: Mapped[int | None] = mapped_column(ForeignKey("centers.id"), index=True)
    channel: Mapped[str] = mapped_column(String(32))
    from_address: Mapped[str] = mapped_column(String(320))
    body: Mapped[str] = mapped_column(Text)
    keyword: Mapped[str | None] = mapped_column(String(16))  # "stop", "start", "help" or None
    received_at: Mapped[datetime]


class SenderPace(Base):
    """The next free send slot of one sender: the shared rate limiter when the broker is not Redis."""

    __tablename__ = "sender_pace"

    sender: Mapped[str] = mapped_column(String(200), primary_key=True)
    next_slot: Mapped[float] = mapped_column(Float)  # seconds since the epoch


class CustomerSegment(Base):
    """A customer's segments, recomputed by set-based SQL before each day's planning."""

    __tablename__ = "customer_segments"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True)
    tier: Mapped[str] = mapped_column(String(1))  # A (top customers), B, C
    warranty: Mapped[str] = mapped_column(String(16))  # "warranty", "out_of_warranty", "no_vehicle"
    activity: Mapped[str] = mapped_column(String(16))  # "active", "lapsed", "no_visits"
    visits_12m: Mapped[int] = mapped_column(Integer)
    spend_12m: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    last_visit: Mapped[date | None] = mapped_column(Date)
    recency: Mapped[int] = mapped_column(SmallInteger)  # 1-5, 5 = most recent
    frequency: Mapped[int] = mapped_column(SmallInteger)  # 1-5, 5 = most visits
    monetary: Mapped[int] = mapped_column(SmallInteger)  # 1-5, 5 = most spend
    computed_on: Mapped[date] = mapped_column(Date)


class SurveyResponse(Base):
    """A 1-5 rating a customer replied to a satisfaction survey, matched to the visit it rates."""

    __tablename__ = "survey_responses"
    __table_args__ = (Index("ix_survey_responses_center_received", "center_id", "received_at"),)

    id: Mapped[intpk]
    center_id: Mapped[int] = mapped_column(ForeignKey("centers.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    # UNIQUE: one rating per visit; a second reply for the same visit updates it.
    visit_id: Mapped[int] = mapped_column(ForeignKey("service_visits.id", ondelete="CASCADE"), unique=True)
    score: Mapped[int] = mapped_column(SmallInteger)
    body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]
    provider_message_id: Mapped[str | None] = mapped_column(String(64))


class WeatherReport(Base):
    """A weather provider's latest answer for one city and day, asked again every refresh interval.

    ``claimed_until`` is set (compare-and-set) by the one process asking the provider, so
    re-runs, later batches and other workers never ask about the same city meanwhile.
    """

    __tablename__ = "weather_reports"
    __table_args__ = (UniqueConstraint("provider", "city", "day"),)

    id: Mapped[intpk]
    provider: Mapped[str] = mapped_column(String(64))
    city: Mapped[str] = mapped_column(String(100))  # canonical (careflow.customers.cities)
    day: Mapped[date] = mapped_column(Date)
    alerts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    fetched_at: Mapped[datetime | None]  # the latest answer; None until the first one
    claimed_until: Mapped[datetime | None]  # a process is asking the provider until then


class SchedulerLease(Base):
    """Who may run the periodic jobs: one holder until ``expires_at`` (compare-and-set renewed)."""

    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]


class SchedulerRun(Base):
    """A once-a-day job that completed (e.g. planning one center's day), so no leader repeats it."""

    __tablename__ = "scheduler_runs"
    __table_args__ = (UniqueConstraint("job", "day"),)

    id: Mapped[intpk]
    job: Mapped[str] = mapped_column(String(100))
    day: Mapped[date] = mapped_column(Date)
    holder: Mapped[str] = mapped_column(String(200))
    finished_at: Mapped[datetime]


class PluginRun(Base):
    """How each care plugin fared in a planning run, so ``careflow plugins`` can show last-run failures."""

    __tablename__ = "plugin_runs"

    id: Mapped[intpk]
    run_id: Mapped[str] = mapped_column(String(36), index=True)
    plugin: Mapped[str] = mapped_column(String(64))
    planned_for: Mapped[datetime]  # the instant the run planned ("now", possibly pretended)
    batches: Mapped[int] = mapped_column(Integer, default=0)
    occasions: Mapped[int] = mapped_column(Integer, default=0)
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    # The first few failures: [{"batch": "1-2000", "customer": "C042", "error": "..."}]
    failures: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[created_at]


class Role(enum.StrEnum):
    """What a console user may do; every role but admin is bound to one center."""

    ADMIN = "admin"  # everything, every center
    CENTER_MANAGER = "center_manager"  # own center: plugin settings, customers, reports
    MARKETER = "marketer"  # own center: templates, previews, reports


class ConsoleUser(Base):
    __tablename__ = "console_users"

    id: Mapped[intpk]
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    center_id: Mapped[int | None] = mapped_column(ForeignKey("centers.id"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[created_at]

    center: Mapped[Center | None] = relationship(lazy="joined")


class ConsoleSession(Base):
    """A signed-in browser; expiry is decided here on the server, never by the cookie."""

    __tablename__ = "console_sessions"

    id: Mapped[intpk]
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the cookie token
    user_id: Mapped[int] = mapped_column(ForeignKey("console_users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[created_at]
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class EarlyStatus(Base):
    """A provider's final delivery report that arrived before careflow recorded its message.

    Applied to the event once the message id is recorded (see ``careflow.delivery.provider_status``).
    """

    __tablename__ = "early_statuses"

    id: Mapped[intpk]
    provider_message_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(32))  # as the provider reported it, e.g. "undelivered"
    error_code: Mapped[str | None] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class SignInFailure(Base):
    """A failed console sign-in: too many for one e-mail or one client address lock it out for a while."""

    __tablename__ = "sign_in_failures"

    id: Mapped[intpk]
    email: Mapped[str] = mapped_column(String(320), index=True)  # as typed, lower-cased
    address: Mapped[str] = mapped_column(String(64), index=True)  # the client's IP address
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class TemplateVersion(Base):
    """Every save of a template in the console; the newest version of a key is the one sent."""

    __tablename__ = "template_versions"
    __table_args__ = (
        UniqueConstraint("scope", "template", "channel", "locale", "version"),
        Index("ix_template_versions_lookup", "scope", "template", "channel", "locale"),
    )

    id: Mapped[intpk]
    # "" for the global default, else the center code: a plain string keeps the key unique
    # (NULLs are never equal in a UNIQUE constraint).
    scope: Mapped[str] = mapped_column(String(64))
    template: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(32))
    locale: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(320))
    note: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[created_at]


class CenterPluginSetting(Base):
    """A center's own settings for one care plugin; they win over careflow.toml for that center."""

    __tablename__ = "center_plugin_settings"
    __table_args__ = (UniqueConstraint("center_id", "plugin"),)

    id: Mapped[intpk]
    center_id: Mapped[int] = mapped_column(ForeignKey("centers.id", ondelete="CASCADE"), index=True)
    plugin: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_by: Mapped[str] = mapped_column(String(320))
    updated_at: Mapped[updated_at]


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
