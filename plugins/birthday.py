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

from sqlalchemy import and_, or_, select, tuple_

from careflow.care import CarePlugin, Occasion, PlanContext
from careflow.hookspecs import hookimpl
from careflow.models import Customer, Purpose

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
    variables: ClassVar[Mapping[str, str]] = {
        "customer.name": "the customer's name",
        "age": "the age the customer turns today, or null when the birth year is unknown",
    }
    samples: ClassVar[Mapping[str, Any]] = {"age": 38}

    # What the console's template preview uses when no real customer is chosen.
    sample_context: ClassVar[Mapping[str, Any]] = {"age": 36}

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        wanted: set[tuple[int, int]] = set()
        wanted_lunar: set[tuple[int, int]] = set()
        for day in ctx.candidate_days():
            wanted |= birthdays_greeted_on(day)
            wanted_lunar |= lunar_birthdays_on(day)[1]
        birthday = tuple_(Customer.birth_month, Customer.birth_day)
        is_lunar = Customer.birthday_calendar == LUNAR
        # Narrowed by the (birth_month, birth_day) index: only today's birthdays are loaded.
        query = select(Customer).where(
            ctx.in_batch(),
            or_(
                and_(or_(Customer.birthday_calendar.is_(None), ~is_lunar), birthday.in_(sorted(wanted))),
                and_(is_lunar, birthday.in_(sorted(wanted_lunar or {(0, 0)}))),
            ),
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


@hookimpl(trylast=True)
def careflow_care_plugins() -> list[CarePlugin]:
    return [BirthdayPlugin()]
