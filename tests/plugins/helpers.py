"""Small helpers the plugin tests share: a runtime with chosen plugins, and reading the outbox back."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from careflow.runtime import Runtime
from careflow.storage.models import CareEvent
from careflow.testing import build_runtime, make_settings


def runtime_with(db_url: str, plugins: dict[str, dict[str, Any]], **sections: Any) -> Runtime:
    """A migrated runtime with exactly these care plugin sections (each enabled unless it says not).

    These tests are about when each plugin finds its customers due, so unless a test says
    otherwise the center sends around the clock and has no frequency cap (both are tested
    on their own in tests/faults/test_quiet_hours.py and tests/test_frequency_cap.py).
    """
    enabled = {name: {"enabled": True, **cfg} for name, cfg in plugins.items()}
    sections.setdefault(
        "centers", {"main": {"send_from": "00:00", "send_until": "24:00", "frequency_cap": 0}}
    )
    return build_runtime(make_settings(db_url, plugins=enabled, **sections))


def events(runtime: Runtime, plugin: str | None = None) -> list[CareEvent]:
    with runtime.sessions() as session:
        query = select(CareEvent).order_by(CareEvent.id)
        if plugin is not None:
            query = query.where(CareEvent.plugin == plugin)
        return list(session.scalars(query))


def recipients(runtime: Runtime, plugin: str) -> list[str]:
    """External ids of the customers the plugin's events are for, in order."""
    from careflow.storage.models import Customer

    with runtime.sessions() as session:
        rows = session.execute(
            select(Customer.external_id)
            .join(CareEvent, CareEvent.customer_id == Customer.id)
            .where(CareEvent.plugin == plugin)
            .order_by(CareEvent.id)
        )
        return [r for (r,) in rows]
