"""What a care plugin is: its declaration, the occasions it yields, and the context it plans in."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import ColumnElement
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from careflow.storage.models import Customer

# Offsets of the earliest and latest time zones on Earth: at any instant, local dates
# span at most these hours either side of UTC.
_EARLIEST_OFFSET = timedelta(hours=-12)
_LATEST_OFFSET = timedelta(hours=14)


class Purpose(enum.StrEnum):
    """Consent is given per purpose: service messages and marketing are separate choices."""

    SERVICE = "service"
    MARKETING = "marketing"


# Segment labels by dimension (careflow.customers.segments computes them); a plugin's ``segments``
# setting names labels: any of them within a dimension, all dimensions named.
SEGMENT_DIMENSIONS: dict[str, frozenset[str]] = {
    "tier": frozenset({"A", "B", "C"}),
    "warranty": frozenset({"warranty", "out_of_warranty", "no_vehicle"}),
    "activity": frozenset({"active", "lapsed", "no_visits"}),
}


class PluginSettings(BaseModel):
    """Settings every care plugin has; subclass it to declare a plugin's own keys."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    # Limit the plugin to customers in these segments (A/B/C, "warranty", "lapsed", ...);
    # None means everyone. Enforced by the planner, not by each plugin.
    segments: list[str] | None = None
    # Overrides the plugin's default priority (higher wins under the frequency cap); None keeps it.
    priority: int | None = Field(default=None, ge=0, le=1000)

    @field_validator("segments")
    @classmethod
    def _known_segments(cls, value: list[str] | None) -> list[str] | None:
        known = set().union(*SEGMENT_DIMENSIONS.values())
        for label in value or []:
            if label not in known:
                raise ValueError(f"unknown segment {label!r}; expected some of: {', '.join(sorted(known))}")
        return value


@dataclass(frozen=True)
class Occasion:
    """One due occasion for one customer, as a plugin reports it.

    ``key`` and ``period`` make the idempotency key ``plugin:key:period:customer``: the
    same occasion reported on a later run is recognised and never sent twice.
    ``context`` must be plain JSON data (str, numbers, bools, lists, dicts); dates as ISO strings.
    """

    customer: Customer
    key: str
    period: str
    due_date: date
    context: Mapping[str, Any] = field(default_factory=dict)
    template: str | None = None  # defaults to the plugin's name
    # Aware instant after which sending is pointless (a weather alert that has passed): a
    # deferred or not-yet-planned event then expires with a reason instead of going out late.
    expires_at: datetime | None = None


class CarePlugin:
    """Base class for care plugins. Override ``occasions``; set the class attributes."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    priority: ClassVar[int] = 50  # higher wins when a frequency cap allows fewer messages than are due
    purpose: ClassVar[Purpose] = Purpose.MARKETING
    settings_model: ClassVar[type[PluginSettings]] = PluginSettings
    # Staff cards (Customer.is_staff) are never care targets unless a plugin says it writes to staff.
    targets_staff: ClassVar[bool] = False
    # Template variables this plugin provides, name -> description (listed to marketers).
    variables: ClassVar[Mapping[str, str]] = {}
    # Example values of those variables, for template lint's segment count and previews.
    samples: ClassVar[Mapping[str, Any]] = {}
    # True when occasions() loads only (nearly) due customers through indexed SQL, never every
    # customer of its batch: the planner may then hand it wide id ranges on quiet days.
    narrows_in_sql: ClassVar[bool] = False
    # False for occasions that must stand alone (a survey awaits a reply to exactly that message).
    bundles: ClassVar[bool] = True

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        """Yield the occasions due in ``ctx``'s batch of customers; narrow candidates in SQL."""
        raise NotImplementedError

    def prepare(self, ctx: PrepareContext) -> list[str]:
        """Once per run, before any batch: fetch or set up what every batch needs (committed).

        Returns problems to report (the run goes on); the default does nothing.
        """
        return []

    def replan_interval(self, settings: PluginSettings) -> timedelta | None:
        """How often the always-on scheduler plans this plugin again after a center's daily plan.

        For occasions that can turn up during the day (a weather warning issued at 14:00):
        ``careflow scheduler`` then runs this plugin alone (``prepare`` and ``occasions``)
        at this interval. None, the default: planned once a day with the others.
        """
        return None


def priority_of(plugin: CarePlugin, settings: PluginSettings) -> int:
    """The priority in force: the ``priority`` setting when given, else the plugin's default."""
    return plugin.priority if settings.priority is None else settings.priority


@dataclass
class PrepareContext:
    """What a plugin sees in the pre-planning step: its own session, committed after ``prepare``."""

    session: Session
    now: datetime
    day: date | None
    settings: PluginSettings
    hook: Any  # the plugin manager's hook relay (``pm.hook``), e.g. to ask for weather providers
    default_timezone: Mapping[int, str]  # center id -> the center's time zone
    # Short transactions of its own, committed at once: e.g. to claim work other processes
    # must see before a slow call, without holding ``session``'s locks through it.
    sessions: sessionmaker[Session]


@dataclass
class PlanContext:
    """What a plugin sees while planning one batch of customers."""

    session: Session
    now: datetime  # aware, the instant the run pretends it is
    day: date | None  # an explicit local day to plan (backfill), or None for "today, locally"
    id_range: tuple[int, int]  # inclusive customer id range of this batch
    settings: PluginSettings
    default_timezone: Mapping[int, str]  # center id -> the center's time zone

    def in_batch(self, column: InstrumentedAttribute[int] = Customer.id) -> ColumnElement[bool]:
        """The SQL condition that keeps a query inside this batch of customers."""
        lo, hi = self.id_range
        return column.between(lo, hi)

    def timezone_of(self, customer: Customer) -> ZoneInfo:
        return ZoneInfo(customer.timezone or self.default_timezone.get(customer.center_id, "UTC"))

    def local_today(self, customer: Customer) -> date:
        """The day being planned in this customer's own time zone."""
        if self.day is not None:
            return self.day
        return self.now.astimezone(self.timezone_of(customer)).date()

    def start_of(self, customer: Customer, day: date) -> datetime:
        """The instant ``day`` begins in this customer's time zone: for ``Occasion.expires_at``."""
        return datetime.combine(day, time(0), tzinfo=self.timezone_of(customer))

    def end_of(self, customer: Customer, day: date) -> datetime:
        """The instant ``day`` is over in this customer's time zone (the next day begins)."""
        return self.start_of(customer, day + timedelta(days=1))

    def candidate_days(self) -> list[date]:
        """Every local date some customer may be living in right now (for SQL narrowing)."""
        if self.day is not None:
            return [self.day]
        utc = self.now.astimezone(UTC)
        first, last = (utc + _EARLIEST_OFFSET).date(), (utc + _LATEST_OFFSET).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]


@dataclass(frozen=True)
class InboundReply:
    """A message a customer sent us, as the ``careflow_reply_received`` hook sees it."""

    customer_id: int | None  # None when the sender matches no customer card
    center_id: int | None
    channel: str  # "sms" or "whatsapp"
    from_address: str  # E.164
    body: str
    received_at: datetime
    provider_message_id: str | None = None


class WeatherProvider:
    """A source of special-weather alerts; asked at most once per city, day and refresh interval."""

    name: ClassVar[str]

    def alerts(self, city: str, day: date, settings: PluginSettings) -> list[Mapping[str, Any]]:
        """Alerts for ``city`` on ``day``: dicts with at least ``kind`` and ``id``; raise on failure.

        ``city`` is careflow's canonical name (``careflow.customers.cities.canonical_city``: 深圳, not
        Shenzhen); ``settings`` is the weather plugin's validated ``[plugins.weather]`` section.
        An alert may say ``ends`` (ISO date, its last day): it is not sent once that day is over.
        """
        raise NotImplementedError
