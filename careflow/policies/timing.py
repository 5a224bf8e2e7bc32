"""The planning-time policies after consent: expiry, bundling, frequency cap by priority, quiet hours."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from careflow.config import CenterSettings
from careflow.policies.bundling import bundle_rows
from careflow.policies.frequency_cap import Cap, apply_frequency_cap
from careflow.policies.quiet_hours import SendWindow
from careflow.storage.models import CareEvent, Customer, EventStatus

if TYPE_CHECKING:
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
        timing = send_timing(now, customer_zone(customer), center_of(row["center_id"]), row.get("expires_at"))
        if timing.status is not EventStatus.PLANNED:
            row["status"], row["not_before"], row["status_reason"] = timing


class Timing(NamedTuple):
    """When an event may go out: now (``planned``), at ``not_before`` (``deferred``), or never."""

    status: EventStatus  # planned, deferred or expired
    not_before: datetime | None
    reason: str | None


def customer_zone(customer: Customer) -> ZoneInfo:
    """The zone a customer's quiet hours are kept in: their own, else their center's."""
    return ZoneInfo(customer.timezone or customer.center.timezone)


def send_timing(
    now: datetime, tz: ZoneInfo, center: CenterSettings | None, expires_at: datetime | None
) -> Timing:
    """Expiry and quiet hours for one event at ``now``: the rule planning, retries and sends share."""
    if expires_at is not None and expires_at <= now:
        return Timing(
            EventStatus.EXPIRED,
            None,
            f"the occasion expired at {expires_at.isoformat()}, before it could be sent "
            f"(checked {now.isoformat()})",
        )
    window = SendWindow.of(center)
    opening = window.next_opening(now, tz)
    if opening is None:
        return Timing(EventStatus.PLANNED, None, None)
    if expires_at is not None and expires_at <= opening:
        return Timing(
            EventStatus.EXPIRED,
            None,
            f"quiet hours ({window} {tz.key}): the occasion expires at {expires_at.isoformat()}, "
            f"before the sending window opens at {opening.isoformat()}",
        )
    return Timing(EventStatus.DEFERRED, opening, window.deferral(opening, tz))
