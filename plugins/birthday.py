"""Birthday greetings, on the customer's birthday in the customer's own time zone.

Customers whose card says ``birthday_calendar = "lunar"`` keep a Chinese lunar month/day
and are greeted on its solar date each year (see ``careflow_plugins.lunar`` for leap months
and short months).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import selectinload

from careflow import CarePlugin, Customer, Occasion, PlanContext, Purpose, hookimpl

from .lunar import lunar_birthdays_on

LUNAR = "lunar"


def greeting_day(month: int, day: int, year: int) -> date:
    """The day to greet in ``year``: Feb 29 birthdays are greeted on Feb 28 in common years."""
    if (month, day) == (2, 29) and not calendar.isleap(year):
        return date(year, 2, 28)
    return date(year, month, day)


def birthdays_greeted_on(day: date) -> set[tuple[int, int]]:
    """The (month, day) birthdays whose greeting falls on ``day``."""
    found = {(day.month, day.day)}
    if (day.month, day.day) == (2, 28) and not calendar.isleap(day.year):
        found.add((2, 29))
    return found


class BirthdayPlugin(CarePlugin):
    name = "birthday"
    description = "Greets customers on their birthday, once a year, in their own time zone."
    priority = 20
    purpose = Purpose.MARKETING
    narrows_in_sql = True  # the (birth_month, birth_day, id) indexes
    variables: ClassVar[Mapping[str, str]] = {
        "customer.name": "the customer's name",
        "age": "the age the customer turns today, or null when the birth year is unknown",
    }
    samples: ClassVar[Mapping[str, Any]] = {"age": 38}

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        # The batch's id range inside every term: each is then one index range (month, day, id),
        # so a window reads only its own customers' entries, not the whole day's.
        batch = ctx.in_batch()
        query = (
            select(Customer)
            .where(batch, or_(*[and_(batch, term) for term in _due_conditions(ctx)]))
            # One query for the few centers instead of a join per customer (which SQLAlchemy
            # reconciles row by row): planning reads each customer's center.
            .options(selectinload(Customer.center))
        )
        for customer in ctx.session.scalars(query):
            today = ctx.local_today(customer)
            assert customer.birth_month is not None and customer.birth_day is not None
            if customer.birthday_calendar == LUNAR:
                lunar_year, greeted = lunar_birthdays_on(today)
                if (customer.birth_month, customer.birth_day) not in greeted:
                    continue
                # Two lunar birthdays can fall in one solar year: the lunar year keeps them apart.
                period, year = f"lunar{lunar_year}", lunar_year
            else:
                if greeting_day(customer.birth_month, customer.birth_day, today.year) != today:
                    continue
                period, year = str(today.year), today.year
            age = year - customer.birth_year if customer.birth_year else None
            yield Occasion(
                customer=customer,
                key="birthday",
                period=period,
                due_date=today,
                context={"age": age},
            )


def _due_conditions(ctx: PlanContext) -> list[ColumnElement[bool]]:
    """Index-friendly SQL for "a birthday greeted today, locally" (refined in Python afterwards).

    Each condition is an equality on (birth_month, birth_day), so both databases answer
    from the birthday index (SQLite only for an OR of such terms, not a row-value IN).
    Customers without a time zone of their own live in their center's: exactly one local
    day per center. The others may live in any day the Earth has right now.
    """
    conditions: list[ColumnElement[bool]] = []
    centers_by_day: dict[date, list[int]] = {}
    for center_id, tz in ctx.default_timezone.items():
        day = ctx.day or ctx.now.astimezone(ZoneInfo(tz)).date()
        centers_by_day.setdefault(day, []).append(center_id)
    for day, centers in sorted(centers_by_day.items()):
        for month, dom in sorted(birthdays_greeted_on(day)):
            conditions.append(
                and_(
                    Customer.birth_month == month,
                    Customer.birth_day == dom,
                    Customer.timezone.is_(None),
                    Customer.center_id.in_(sorted(centers)),
                )
            )
    anywhere: set[tuple[int, int]] = set()
    lunar: set[tuple[int, int]] = set()
    for day in ctx.candidate_days():
        anywhere |= birthdays_greeted_on(day)
        lunar |= lunar_birthdays_on(day)[1]
    for month, dom in sorted(anywhere):
        conditions.append(
            and_(Customer.birth_month == month, Customer.birth_day == dom, Customer.timezone.is_not(None))
        )
    # Solar terms skip lunar cards; a lunar card's month/day is matched against today's lunar date.
    solar_card = or_(Customer.birthday_calendar.is_(None), Customer.birthday_calendar != LUNAR)
    conditions = [and_(condition, solar_card) for condition in conditions]
    for month, dom in sorted(lunar):
        conditions.append(
            and_(
                Customer.birth_month == month, Customer.birth_day == dom, Customer.birthday_calendar == LUNAR
            )
        )
    return conditions


@hookimpl(trylast=True)
def careflow_care_plugins() -> list[CarePlugin]:
    return [BirthdayPlugin()]
