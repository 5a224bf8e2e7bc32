"""Win-back: one message to a customer who has not visited for N months, once per lapse.

Candidates are found by the date of a visit: a customer whose lapse began within the last
``catch_up_days`` (one window of visit dates per lapse length in use) through the
``(date, customer_id)`` index, so a day reads about a month of visits, not every customer's.
Lapses older than that (the plugin was just switched on, its months changed, planning stopped
for weeks) are caught on ``full_scan_weekday``, when every customer's last visit is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from typing import Any, ClassVar, Literal, get_args

from pydantic import Field
from sqlalchemy import ColumnElement, String, case, cast, exists, func, or_, select

from careflow import (
    CareEvent,
    CarePlugin,
    Customer,
    CustomerSegment,
    Occasion,
    PlanContext,
    PluginSettings,
    Purpose,
    ServiceVisit,
    hookimpl,
    months_before,
)

Tier = Literal["A", "B", "C"]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)


class WinbackSettings(PluginSettings):
    months: int = Field(default=9, ge=1, le=120)
    # Tier -> months without a visit before that tier is written to (e.g. A = 6: top customers sooner).
    months_by_tier: dict[Tier, int] = Field(default_factory=dict)
    # Lapses that began this many days ago or less are found every day through the visits' date index.
    catch_up_days: int = Field(default=31, ge=1, le=3660)
    # The weekday every customer's last visit is read, for older lapses not written to yet.
    full_scan_weekday: Weekday | Literal["never"] = "monday"


def _lapse_months(cfg: WinbackSettings, tier: str | None) -> int:
    """Months without a visit after which a customer of ``tier`` is written to."""
    return next((months for t, months in cfg.months_by_tier.items() if t == tier), cfg.months)


class WinbackPlugin(CarePlugin):
    name = "winback"
    description = "Writes once to customers who have not visited for N months (per segment); once per lapse."
    priority = 5
    purpose = Purpose.MARKETING
    narrows_in_sql = True  # the (date, customer_id) index on service_visits, except on full-scan days
    settings_model = WinbackSettings
    variables: ClassVar[Mapping[str, str]] = {
        "last_visit": "the date of the customer's last visit (ISO; use | date)",
        "months": "the months without a visit that made the customer due",
    }
    # Realistic values so template lint can trial-render the texts.
    samples: ClassVar[Mapping[str, Any]] = {"last_visit": "2025-05-20", "months": 9}

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        cfg = ctx.settings
        assert isinstance(cfg, WinbackSettings)
        days = ctx.candidate_days()
        latest_day = max(days)
        last_visits = select(ServiceVisit.customer_id, func.max(ServiceVisit.date).label("last_visit")).where(
            ctx.in_batch(ServiceVisit.customer_id)
        )
        if all(WEEKDAYS[day.weekday()] != cfg.full_scan_weekday for day in days):
            recent = _recent_lapse_visits(cfg, min(days), latest_day)
            candidates = select(ServiceVisit.customer_id).where(
                ctx.in_batch(ServiceVisit.customer_id), recent
            )
            last_visits = last_visits.where(ServiceVisit.customer_id.in_(candidates))
        last = last_visits.group_by(ServiceVisit.customer_id).subquery()
        tier = CustomerSegment.tier
        # The loosest cut-off any customer's local day allows, per tier; the exact check is below.
        cutoff = case(
            *[(tier == t, months_before(latest_day, _lapse_months(cfg, t))) for t in ("A", "B", "C")],
            else_=months_before(latest_day, cfg.months),
        )
        already = exists().where(
            CareEvent.customer_id == Customer.id,
            CareEvent.plugin == self.name,
            CareEvent.period == cast(last.c.last_visit, String),
        )
        query = (
            select(Customer, last.c.last_visit, tier)
            .join(last, last.c.customer_id == Customer.id)
            .outerjoin(CustomerSegment, CustomerSegment.customer_id == Customer.id)
            .where(ctx.in_batch(), Customer.is_staff.is_(False), last.c.last_visit <= cutoff, ~already)
        )
        for customer, last_visit, customer_tier in ctx.session.execute(query):
            last_day = last_visit if isinstance(last_visit, date) else date.fromisoformat(str(last_visit))
            months = _lapse_months(cfg, customer_tier)
            today = ctx.local_today(customer)
            if last_day > months_before(today, months):
                continue
            yield Occasion(
                customer=customer,
                key="winback",
                # The lapse is named by its last visit: a later visit starts a new lapse.
                period=last_day.isoformat(),
                due_date=today,
                context={"last_visit": last_day.isoformat(), "months": months},
            )


def _recent_lapse_visits(cfg: WinbackSettings, earliest: date, latest: date) -> ColumnElement[bool]:
    """Visits on a day whose lapse began within ``catch_up_days``, for every lapse length in use.

    A customer with no such visit either lapsed longer ago or is not lapsed; one with such a
    visit may have come back since, which the last-visit check then sees.
    """
    back = timedelta(days=cfg.catch_up_days)
    lengths = sorted({cfg.months, *cfg.months_by_tier.values()})
    return or_(
        *[
            ServiceVisit.date.between(months_before(earliest, m) - back, months_before(latest, m))
            for m in lengths
        ]
    )


@hookimpl(trylast=True)
def careflow_care_plugins() -> list[CarePlugin]:
    return [WinbackPlugin()]
