"""A bench-only care plugin: a storm warning for every customer of one center (about 20% of them).

It stands in for the weather plugin (another branch) on a "weather day": a cheap indexed
predicate (``customers.center_id``) makes a fifth of all customers due at once.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from careflow.care import CarePlugin, Occasion, PlanContext
from careflow.hookspecs import hookimpl
from careflow.models import Center, Customer, Purpose

STORM_CENTER = "bj"  # bench/generate.py gives each of its five centers a fifth of the customers


class StormDayPlugin(CarePlugin):
    name = "bench_storm"
    description = "Benchmark only: warns every customer of one center about a storm."
    priority = 90
    purpose = Purpose.SERVICE
    narrows_in_sql = True  # the customers.center_id index

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        center = select(Center.id).where(Center.code == STORM_CENTER).scalar_subquery()
        for customer in ctx.session.scalars(
            select(Customer).where(ctx.in_batch(), Customer.center_id == center)
        ):
            today = ctx.local_today(customer)
            yield Occasion(
                customer=customer,
                key="storm",
                period=today.isoformat(),
                due_date=today,
                context={"age": None},
                template="birthday",  # a shipped template (its text is beside the point here)
            )


@hookimpl
def careflow_care_plugins() -> list[CarePlugin]:
    return [StormDayPlugin()]
