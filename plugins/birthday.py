"""Birthday greetings, on the customer's birthday in the customer's own time zone."""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping
from datetime import date
from typing import ClassVar

from sqlalchemy import and_, or_, select

from careflow.care import CarePlugin, Occasion, PlanContext
from careflow.hookspecs import hookimpl
from careflow.models import Customer, Purpose


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
    narrows_in_sql = True  # the (birth_month, birth_day) index
    variables: ClassVar[Mapping[str, str]] = {
        "customer.name": "the customer's name",
        "age": "the age the customer turns today, or null when the birth year is unknown",
    }

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        wanted: set[tuple[int, int]] = set()
        for day in ctx.candidate_days():
            wanted |= birthdays_greeted_on(day)
        # Narrowed by the (birth_month, birth_day) index: only today's birthdays are loaded.
        # An OR of equalities, not a row-value IN: SQLite uses the index only for the former.
        on_day = [and_(Customer.birth_month == m, Customer.birth_day == d) for m, d in sorted(wanted)]
        query = select(Customer).where(ctx.in_batch(), or_(*on_day))
        for customer in ctx.session.scalars(query):
            today = ctx.local_today(customer)
            assert customer.birth_month is not None and customer.birth_day is not None
            if greeting_day(customer.birth_month, customer.birth_day, today.year) != today:
                continue
            age = today.year - customer.birth_year if customer.birth_year else None
            yield Occasion(
                customer=customer,
                key="birthday",
                period=str(today.year),
                due_date=today,
                context={"age": age},
            )


@hookimpl(trylast=True)
def careflow_care_plugins() -> list[CarePlugin]:
    return [BirthdayPlugin()]
