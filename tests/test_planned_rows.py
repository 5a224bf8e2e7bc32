"""The planned outbox row and the policies' decisions on it (issue 14, item 2).

Each planning policy returns what it decided (status, reason, and for a deferral when)
instead of changing rows; the timing pipeline applies them in the documented order, and the
outbox records exactly the row that comes out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from careflow.config import CenterSettings
from careflow.planning.outbox import insert_ignoring_duplicates
from careflow.policies.bundling import bundle_rows
from careflow.policies.frequency_cap import Cap, cap_decisions
from careflow.policies.rows import Decision, PlannedRow
from careflow.policies.timing import apply_timing_and_caps, planning_expiry
from careflow.runtime import Runtime
from careflow.storage.models import CareEvent, EventStatus
from careflow.testing import add_customer, build_runtime, make_settings, parse_instant

NOW = parse_instant("2026-05-11T22:00:00+08:00")  # after the default window (09:00-20:00) closed
DAY = date(2026, 5, 11)


def planned(
    plugin: str, priority: int, *, customer_id: int = 1, center_id: int = 1, **fields: Any
) -> PlannedRow:
    """A row as the planner builds it after channel choice: planned on SMS."""
    values: dict[str, Any] = {
        "idempotency_key": f"{plugin}:{plugin}:2026:{customer_id}",
        "center_id": center_id,
        "customer_id": customer_id,
        "plugin": plugin,
        "occasion": plugin,
        "period": "2026",
        "purpose": "marketing",
        "priority": priority,
        "due_date": DAY,
        "channel": "sms",
        "recipient": "+8613800138000",
        "channel_reason": "sms: first in the center's channel order",
        "template": plugin,
        "locale": "en",
        "context": {"plugin": plugin},
        "status": EventStatus.PLANNED,
        "status_reason": None,
        "expires_at": None,
        **fields,
    }
    return PlannedRow(**values)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = make_settings(
        f"sqlite:///{tmp_path / 'c.db'}",
        centers={
            "main": {
                "timezone": "Asia/Shanghai",
                "send_from": "09:00",
                "send_until": "20:00",
                "bundling": True,
            }
        },
    )
    built = build_runtime(settings)
    try:
        yield built
    finally:
        built.close()


def test_a_row_is_frozen_and_a_decision_changes_only_status_reason_and_not_before() -> None:
    row = planned(
        "birthday",
        20,
        customer_id=7,
        center_id=3,
        occasion="birthday-2",
        period="p2026",
        purpose="service",
        due_date=date(2026, 5, 12),
        channel="whatsapp",
        recipient="+8613900139000",
        channel_reason="preferred whatsapp",
        template="birthday_v2",
        locale="zh_CN",
        context={"age": 38},
        status_reason="not yet decided",
        expires_at=parse_instant("2026-05-12T20:00:00+08:00"),
        not_before=parse_instant("2026-05-12T08:00:00+08:00"),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.status = EventStatus.SUPPRESSED  # type: ignore[misc]
    opening = parse_instant("2026-05-12T09:00:00+08:00")
    deferred = row.decided(Decision(EventStatus.DEFERRED, "quiet hours", opening))
    assert (deferred.status, deferred.status_reason, deferred.not_before) == (
        EventStatus.DEFERRED,
        "quiet hours",
        opening,
    )
    decided = {"status", "status_reason", "not_before"}
    kept = [field.name for field in dataclasses.fields(PlannedRow) if field.name not in decided]
    assert {name: getattr(deferred, name) for name in kept} == {name: getattr(row, name) for name in kept}
    # Every other field is distinct, so a field carried into the wrong place would show.
    assert len({repr(getattr(row, name)) for name in kept}) == len(kept)
    assert (row.status, row.not_before) == (EventStatus.PLANNED, parse_instant("2026-05-12T08:00:00+08:00"))


def test_expiry_decides_expired_with_the_reason_and_leaves_other_rows_alone() -> None:
    ended = parse_instant("2026-05-11T21:00:00+08:00")
    assert planning_expiry(planned("weather", 90, expires_at=ended), NOW, None) == Decision(
        EventStatus.EXPIRED, "the occasion expired at 2026-05-11T21:00:00+08:00, before it was planned"
    )
    # A past day planned now (a backfill): what ends before the run's clock cannot be sent.
    later = parse_instant("2026-05-12T08:00:00+08:00")
    backfill = planning_expiry(
        planned("weather", 90, expires_at=later), NOW, parse_instant("2026-05-13T10:00:00+08:00")
    )
    assert backfill == Decision(
        EventStatus.EXPIRED,
        "the occasion expired at 2026-05-12T08:00:00+08:00, before this run (2026-05-13T10:00:00+08:00) "
        "could send it",
    )
    assert planning_expiry(planned("weather", 90, expires_at=later), NOW, None) is None
    # Unreachable already: consent's reason stays the one recorded.
    unreachable = planned(
        "weather", 90, expires_at=ended, status=EventStatus.SUPPRESSED, status_reason="no consent"
    )
    assert planning_expiry(unreachable, NOW, None) is None


def test_the_frequency_cap_decides_only_the_losers_naming_the_winners(runtime: Runtime) -> None:
    rows = [planned("holiday", 10), planned("warranty", 90), planned("loyalty", 50)]
    with runtime.sessions() as session:
        decisions = cap_decisions(
            session, rows, cap_for=lambda _: Cap.of(CenterSettings(frequency_cap=2)), existing_keys=set()
        )
    assert decisions == {
        "holiday:holiday:2026:1": Decision(
            EventStatus.SUPPRESSED,
            "frequency cap: at most 2 care message(s) per 7 days; 0 already recorded in the window; "
            "gave way to warranty (priority 90), loyalty (priority 50) (this: holiday, priority 10)",
        )
    }
    assert [row.status for row in rows] == [EventStatus.PLANNED] * 3  # nothing changed in place


def test_bundling_decides_the_parts_and_returns_the_bundle_row(runtime: Runtime) -> None:
    ends = parse_instant("2026-05-12T20:00:00+08:00")
    rows = [
        planned("birthday", 20, expires_at=ends),
        planned("maintenance", 80, purpose="service"),
        planned("survey", 50),  # never bundled: a reply must answer exactly its question
    ]
    with runtime.sessions() as session:
        bundles = bundle_rows(
            session, rows, enabled_for=lambda _: True, existing_keys=set(), standalone={"survey"}
        )
    key = "bundle:sms:2026-05-11:1"
    assert bundles.parts == {
        "birthday:birthday:2026:1": Decision(EventStatus.SUPPRESSED, f"bundled into {key}"),
        "maintenance:maintenance:2026:1": Decision(EventStatus.SUPPRESSED, f"bundled into {key}"),
    }
    [bundle] = bundles.rows
    assert (bundle.idempotency_key, bundle.plugin, bundle.template, bundle.period) == (
        key,
        "bundle",
        "bundle",
        "2026-05-11",
    )
    assert (bundle.status, bundle.priority, bundle.purpose) == (EventStatus.PLANNED, 80, "marketing")
    assert bundle.context == {
        "parts": [
            {"plugin": "maintenance", "occasion": "maintenance", "context": {"plugin": "maintenance"}},
            {"plugin": "birthday", "occasion": "birthday", "context": {"plugin": "birthday"}},
        ]
    }
    assert bundle.expires_at is None  # worth sending while any part is: the maintenance one never ends
    assert (bundle.channel, bundle.recipient, bundle.customer_id) == ("sms", "+8613800138000", 1)


def test_the_pipeline_applies_expiry_bundling_the_cap_and_quiet_hours_in_that_order(runtime: Runtime) -> None:
    with runtime.sessions.begin() as session:
        customer = add_customer(session, external_id="A")
        who = {"customer_id": customer.id, "center_id": customer.center_id}
        rows = [
            # Expired first: it then takes no place under the cap, whatever its priority.
            planned("weather", 90, expires_at=parse_instant("2026-05-11T21:00:00+08:00"), **who),
            planned("maintenance", 80, purpose="service", **who),
            planned("birthday", 20, **who),
            planned("survey", 50, **who),
            planned("holidays", 10, **who),
        ]
        given = list(rows)
        out = apply_timing_and_caps(
            runtime, session, rows, {customer.id: customer}, NOW, standalone={"survey", "holidays"}
        )
    assert rows == given  # the rows handed in are as they were
    bundle = f"bundle:sms:2026-05-11:{customer.id}"
    deferred = "quiet hours (09:00-20:00 Asia/Shanghai): deferred until 2026-05-12T09:00:00+08:00"
    assert [(r.plugin, r.status, r.status_reason) for r in out] == [
        ("weather", "expired", "the occasion expired at 2026-05-11T21:00:00+08:00, before it was planned"),
        ("maintenance", "suppressed", f"bundled into {bundle}"),
        ("birthday", "suppressed", f"bundled into {bundle}"),
        # The bundle is one message: with the survey it fills the cap of 2 ...
        ("survey", "deferred", deferred),
        (
            "holidays",
            "suppressed",
            "frequency cap: at most 2 care message(s) per 7 days; 0 already recorded in the window; "
            "gave way to bundle (priority 80), survey (priority 50) (this: holidays, priority 10)",
        ),
        # ... and, like it, waits for the sending window; its parts do not.
        ("bundle", "deferred", deferred),
    ]
    opening = parse_instant("2026-05-12T09:00:00+08:00")
    assert [r.not_before for r in out] == [None, None, None, opening, None, opening]


def test_the_outbox_records_every_field_of_the_planned_row(db_url: str) -> None:
    runtime = build_runtime(make_settings(db_url))
    try:
        with runtime.sessions.begin() as session:
            customer = add_customer(session, external_id="A")
            row = planned(
                "birthday",
                20,
                customer_id=customer.id,
                center_id=customer.center_id,
                context={"age": 40, "name": "王伟"},
                status=EventStatus.DEFERRED,
                status_reason="quiet hours",
                expires_at=parse_instant("2026-05-12T20:00:00+08:00"),
                not_before=parse_instant("2026-05-12T09:00:00+08:00"),
            )
            [(event_id, key, status)] = insert_ignoring_duplicates(session, [row])
            assert (key, status) == (row.idempotency_key, "deferred")
            assert insert_ignoring_duplicates(session, [row]) == []  # recorded once
        with runtime.sessions() as session:
            event = session.scalars(select(CareEvent).where(CareEvent.id == event_id)).one()
            recorded = {field.name: getattr(event, field.name) for field in dataclasses.fields(PlannedRow)}
        assert recorded == {**row.as_columns(), "status": "deferred"}
        assert (event.attempts, event.needs_reconcile, event.body) == (0, False, None)
    finally:
        runtime.close()


def test_a_planned_row_names_only_outbox_columns() -> None:
    columns = {column.name for column in CareEvent.__table__.columns}
    fields = [field.name for field in dataclasses.fields(PlannedRow)]
    assert set(fields) <= columns
    assert list(planned("birthday", 20).as_columns()) == fields
