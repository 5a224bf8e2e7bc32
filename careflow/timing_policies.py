"""The planning-time policies after consent: expiry, bundling, frequency cap by priority, quiet hours."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from careflow.bundling import bundle_rows
from careflow.config import CenterSettings
from careflow.frequency import Cap, apply_frequency_cap
from careflow.models import CareEvent, Customer, EventStatus
from careflow.quiet_hours import SendWindow
from careflow.runtime import Runtime


def apply_timing_and_caps(
    runtime: Runtime,
    session: Session,
    rows: list[dict[str, Any]],
    customers: Mapping[int, Customer],
    now: datetime,
    standalone: Collection[str] = (),
    *,
    clock: datetime | None = None,
) -> None:
    """Set each row's final status and reason in place: planned, deferred, expired or suppressed.

    Where a center bundles, bundle rows are appended to ``rows`` (``standalone`` plugins excepted).
    ``now`` is the instant planned; a later ``clock`` (a past day planned now) also expires rows
    that end before it, since nothing can be sent before it.
    """
    if not rows:
        return
    centers = runtime.settings.centers
    codes = {c.center_id: c.center.code for c in customers.values()}

    def center_of(center_id: int) -> CenterSettings | None:
        return centers.get(codes.get(center_id, ""))

    for row in rows:
        expires = row.get("expires_at")
        if row["status"] == EventStatus.PLANNED and expires is not None and expires <= now:
            row["status"] = EventStatus.EXPIRED
            row["status_reason"] = f"the occasion expired at {expires.isoformat()}, before it was planned"
        elif row["status"] == EventStatus.PLANNED and expires is not None and clock and expires <= clock:
            row["status"] = EventStatus.EXPIRED
            row["status_reason"] = (
                f"the occasion expired at {expires.isoformat()}, before this run "
                f"({clock.isoformat()}) could send it"
            )
    keys = [r["idempotency_key"] for r in rows]
    existing = set(
        session.scalars(select(CareEvent.idempotency_key).where(CareEvent.idempotency_key.in_(keys)))
    )
    # Before the cap: a bundle is one message, and its parts no longer compete on their own.
    bundle_rows(
        session,
        rows,
        enabled_for=lambda cid: bool((center := center_of(cid)) and center.bundling),
        existing_keys=existing,
        standalone=standalone,
    )
    apply_frequency_cap(session, rows, cap_for=lambda cid: Cap.of(center_of(cid)), existing_keys=existing)
    for row in rows:
        if row["status"] != EventStatus.PLANNED:
            continue
        customer = customers[row["customer_id"]]
        tz = ZoneInfo(customer.timezone or customer.center.timezone)
        window = SendWindow.of(center_of(row["center_id"]))
        opening = window.next_opening(now, tz)
        if opening is None:
            continue
        expires = row.get("expires_at")
        if expires is not None and expires <= opening:
            row["status"] = EventStatus.EXPIRED
            row["status_reason"] = (
                f"quiet hours ({window} {tz.key}): the occasion expires at {expires.isoformat()}, "
                f"before the sending window opens at {opening.isoformat()}"
            )
            continue
        row["status"] = EventStatus.DEFERRED
        row["not_before"] = opening
        row["status_reason"] = (
            f"quiet hours ({window} {tz.key}): deferred until {opening.astimezone(tz).isoformat()}"
        )
