"""Bench-only care plugins: a storm day (20% of customers due) and a fixed-size due set.

``bench_storm`` stands in for the weather plugin (another branch) on a "weather day": a
cheap indexed predicate (``customers.center_id``) makes a fifth of all customers due at once.
``bench_fixed`` makes exactly ``FIXED_DUE`` customers due, spread evenly over the id range,
whatever the number of customers: planning 10^5 and 10^6 customers with the same due set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from careflow.care import CarePlugin, Occasion, PlanContext, Purpose
from careflow.hookspecs import hookimpl
from careflow.storage.models import Center, Customer

STORM_CENTER = "bj"  # bench/generate.py gives each of its five centers a fifth of the customers
FIXED_DUE = 300


class StormDayPlugin(CarePlugin):
    name = "bench_storm"
    description = "Benchmark only: warns every customer of one center about a storm."
    priority = 90
    purpose = Purpose.SERVICE
    narrows_in_sql = True  # the customers.center_id index
    # It renders the birthday template, so it provides that template's variable.
    variables: ClassVar[Mapping[str, str]] = {"age": "unused here (always empty)"}
    samples: ClassVar[Mapping[str, Any]] = {"age": None}

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        center = select(Center.id).where(Center.code == STORM_CENTER).scalar_subquery()
        query = (
            select(Customer)
            .where(ctx.in_batch(), Customer.center_id == center)
            .options(selectinload(Customer.center))  # as the built-in plugins load customers
        )
        for customer in ctx.session.scalars(query):
            today = ctx.local_today(customer)
            yield Occasion(
                customer=customer,
                key="storm",
                period=today.isoformat(),
                due_date=today,
                context={"age": None},
                template="birthday",  # a shipped template (its text is beside the point here)
            )


def fixed_due_ids(last_id: int) -> list[int]:
    """``FIXED_DUE`` ids spread evenly over 1..last_id (all of them if there are fewer)."""
    step = max(1, last_id // FIXED_DUE)
    return list(range(step, last_id + 1, step))[:FIXED_DUE]


class FixedDuePlugin(CarePlugin):
    name = "bench_fixed"
    description = "Benchmark only: the same number of customers is due however many there are."
    priority = 10
    purpose = Purpose.SERVICE
    narrows_in_sql = True  # the primary key
    # It renders the birthday template, so it provides that template's variable.
    variables: ClassVar[Mapping[str, str]] = {"age": "unused here (always empty)"}
    samples: ClassVar[Mapping[str, Any]] = {"age": None}

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        last = ctx.session.scalar(select(func.max(Customer.id))) or 0
        lo, hi = ctx.id_range
        wanted = [i for i in fixed_due_ids(last) if lo <= i <= hi]
        if not wanted:
            return
        query = select(Customer).where(Customer.id.in_(wanted)).options(selectinload(Customer.center))
        for customer in ctx.session.scalars(query):
            today = ctx.local_today(customer)
            yield Occasion(
                customer=customer,
                key="fixed",
                period=today.isoformat(),
                due_date=today,
                context={"age": None},
                template="birthday",
            )


@hookimpl
def careflow_care_plugins() -> list[CarePlugin]:
    return [StormDayPlugin(), FixedDuePlugin()]
