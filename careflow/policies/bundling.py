"""Bundling: a customer's occasions due on one day and channel become one message.

Runs in planning after channel choice and expiry, before the frequency cap, so a bundle
counts as one message. Each part stays its own care_events row (audit, idempotency) with
status ``suppressed`` and reason ``bundled into <bundle key>``; one more row, plugin
``bundle``, carries every part's context and is the only one sent.

Re-runs: parts already recorded never compete again, so no second bundle is made. An
occasion that turns up after its day's bundle was recorded is sent on its own (subject to
the frequency cap): the bundle has gone, and holding the part back would drop it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careflow.care import Purpose
from careflow.policies.rows import Decision, PlannedRow
from careflow.storage.models import CareEvent, EventStatus

BUNDLE = "bundle"  # the bundle rows' plugin and template name

# Template variables of the bundle template, for template lint (beside the core variables).
BUNDLE_VARIABLES: dict[str, str] = {
    "parts": "the bundled occasions, highest priority first: list of {plugin, occasion, context}",
}
BUNDLE_SAMPLES: dict[str, Any] = {
    "parts": [
        {
            "plugin": "maintenance",
            "occasion": "service-soon",
            "context": {
                "plate": "沪A·12345",
                "model": "Camry",
                "service_due": "2026-06-01",
                "reason": "time",
            },
        },
        {
            "plugin": "points",
            "occasion": "voucher-expiring",
            "context": {
                "expires_on": "2026-12-31",
                "voucher": {"code": "V-7Q2K9", "kind": "repair", "value": 100},
            },
        },
        {"plugin": "birthday", "occasion": "birthday", "context": {"age": 38}},
    ]
}


def bundle_key(channel: str, due_date: str, customer_id: int) -> str:
    """The same customer, day and channel always map to the same bundle key."""
    return f"{BUNDLE}:{channel}:{due_date}:{customer_id}"


@dataclass(frozen=True, slots=True)
class Bundles:
    """What bundling decided: each part's decision (``suppressed``, by key) and the bundle rows."""

    parts: dict[str, Decision] = field(default_factory=dict)
    rows: list[PlannedRow] = field(default_factory=list)


def bundle_rows(
    session: Session,
    rows: Sequence[PlannedRow],
    *,
    enabled_for: Callable[[int], bool],
    existing_keys: Collection[str],
    standalone: Collection[str] = (),
) -> Bundles:
    """Merge new planned rows per (customer, day, channel) into bundle rows, to add to ``rows``.

    ``enabled_for(center_id)`` says whether the center bundles; ``standalone`` names plugins
    whose occasions are never bundled. Groups of one are left alone. Each part is decided
    ``suppressed``, "bundled into <bundle key>".
    """
    groups: dict[tuple[int, str, str], list[PlannedRow]] = defaultdict(list)
    for row in rows:
        if (
            row.status == EventStatus.PLANNED
            and row.channel
            and row.idempotency_key not in existing_keys
            and row.plugin not in standalone
            and enabled_for(row.center_id)
        ):
            groups[(row.customer_id, row.channel, row.due_date.isoformat())].append(row)
    groups = {k: parts for k, parts in groups.items() if len(parts) > 1}
    if not groups:
        return Bundles()
    keys = {group: bundle_key(group[1], group[2], group[0]) for group in groups}
    recorded = set(
        session.scalars(select(CareEvent.idempotency_key).where(CareEvent.idempotency_key.in_(keys.values())))
    )
    bundles = Bundles()
    for group, parts in groups.items():
        key = keys[group]
        if key in recorded:  # a late occasion: today's bundle has already gone out
            continue
        parts.sort(key=lambda r: (-r.priority, r.plugin, r.idempotency_key))
        bundles.rows.append(_bundle_row(key, parts))
        bundled = Decision(EventStatus.SUPPRESSED, f"bundled into {key}")
        for part in parts:
            bundles.parts[part.idempotency_key] = bundled
    return bundles


def _bundle_row(key: str, parts: list[PlannedRow]) -> PlannedRow:
    first = parts[0]
    service = all(p.purpose == str(Purpose.SERVICE) for p in parts)
    expiries = [p.expires_at for p in parts if p.expires_at is not None]
    return replace(
        first,
        idempotency_key=key,
        plugin=BUNDLE,
        occasion=BUNDLE,
        period=first.due_date.isoformat(),
        purpose=str(Purpose.SERVICE if service else Purpose.MARKETING),
        priority=first.priority,
        template=BUNDLE,
        context={"parts": [_part(p) for p in parts]},
        status=EventStatus.PLANNED,
        status_reason=None,
        # Still worth sending while any part is: it expires only when every part has.
        expires_at=max(expiries) if len(expiries) == len(parts) else None,
        not_before=None,
    )


def _part(row: PlannedRow) -> dict[str, Any]:
    return {"plugin": row.plugin, "occasion": row.occasion, "context": row.context}
