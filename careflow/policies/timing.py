"""The planning-time policies after consent, in order: expiry, bundling, frequency cap, quiet hours."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from careflow.config import CenterSettings
from careflow.policies.bundling import bundle_rows
from careflow.policies.frequency_cap import Cap, cap_decisions
from careflow.policies.quiet_hours import SendWindow
from careflow.policies.rows import Decision, PlannedRow
from careflow.storage.models import CareEvent, Customer, EventStatus

if TYPE_CHECKING:
    from careflow.runtime import Runtime


def apply_timing_and_caps(
    runtime: Runtime,
    session: Session,
    rows: Sequence[PlannedRow],
    customers: Mapping[int, Customer],
    now: datetime,
    standalone: Collection[str] = (),
    *,
    clock: datetime | None = None,
) -> list[PlannedRow]:
    """The rows with their final status and reason: planned, deferred, expired or suppressed.

    The policies run in this order, each on the rows the one before returned; each returns
    its ``Decision`` for the rows it concerns, and this applies them:

    1. expiry (``planning_expiry``): a planned occasion past its ``expires_at`` is ``expired``;
    2. bundling (``careflow.policies.bundling.bundle_rows``), where a center bundles: a
       customer's planned rows of one day and channel are ``suppressed`` as parts of one
       bundle row, added after the others (``standalone`` plugins never bundle);
    3. the frequency cap (``careflow.policies.frequency_cap.cap_decisions``): the
       lowest-priority rows over a customer's cap are ``suppressed``;
    4. quiet hours (``send_timing``): a row still planned outside its sending window is
       ``deferred`` to the opening, or ``expired`` if it ends before then.

    ``now`` is the instant planned; a later ``clock`` (a past day planned now) also expires rows
    that end before it, since nothing can be sent before it. ``rows`` themselves are frozen.
    """
    if not rows:
        return []
    centers = runtime.settings.centers
    codes = {c.center_id: c.center.code for c in customers.values()}

    def center_of(center_id: int) -> CenterSettings | None:
        return centers.get(codes.get(center_id, ""))

    decided = [row if (d := planning_expiry(row, now, clock)) is None else row.decided(d) for row in rows]
    keys = [r.idempotency_key for r in decided]
    existing = set(
        session.scalars(select(CareEvent.idempotency_key).where(CareEvent.idempotency_key.in_(keys)))
    )
    # Before the cap: a bundle is one message, and its parts no longer compete on their own.
    bundles = bundle_rows(
        session,
        decided,
        enabled_for=lambda cid: bool((center := center_of(cid)) and center.bundling),
        existing_keys=existing,
        standalone=standalone,
    )
    if bundles.rows:
        decided = [*_applied(decided, bundles.parts), *bundles.rows]
    capped = cap_decisions(
        session, decided, cap_for=lambda cid: Cap.of(center_of(cid)), existing_keys=existing
    )
    decided = _applied(decided, capped)
    for index, row in enumerate(decided):
        if row.status != EventStatus.PLANNED:
            continue
        customer = customers[row.customer_id]
        timing = send_timing(now, customer_zone(customer), center_of(row.center_id), row.expires_at)
        if timing.status is not EventStatus.PLANNED:
            decided[index] = row.decided(timing)
    return decided


def planning_expiry(row: PlannedRow, now: datetime, clock: datetime | None) -> Decision | None:
    """``expired`` for a planned row whose occasion ends by ``now`` (or a later ``clock``); else None."""
    expires = row.expires_at
    if row.status != EventStatus.PLANNED or expires is None:
        return None
    if expires <= now:
        return Decision(
            EventStatus.EXPIRED, f"the occasion expired at {expires.isoformat()}, before it was planned"
        )
    if clock and expires <= clock:
        return Decision(
            EventStatus.EXPIRED,
            f"the occasion expired at {expires.isoformat()}, before this run "
            f"({clock.isoformat()}) could send it",
        )
    return None


def _applied(rows: list[PlannedRow], decisions: Mapping[str, Decision]) -> list[PlannedRow]:
    """``rows`` with the decisions (by idempotency key) applied; the same list when there are none."""
    if not decisions:
        return rows
    return [row if (d := decisions.get(row.idempotency_key)) is None else row.decided(d) for row in rows]


def customer_zone(customer: Customer) -> ZoneInfo:
    """The zone a customer's quiet hours are kept in: their own, else their center's."""
    return ZoneInfo(customer.timezone or customer.center.timezone)


def send_timing(
    now: datetime, tz: ZoneInfo, center: CenterSettings | None, expires_at: datetime | None
) -> Decision:
    """Expiry and quiet hours for one event at ``now``: the rule planning, retries and sends share.

    ``planned`` (it may go now), ``deferred`` to ``not_before`` (the window's opening), or
    ``expired``, with the reason to record.
    """
    if expires_at is not None and expires_at <= now:
        return Decision(
            EventStatus.EXPIRED,
            f"the occasion expired at {expires_at.isoformat()}, before it could be sent "
            f"(checked {now.isoformat()})",
        )
    window = SendWindow.of(center)
    opening = window.next_opening(now, tz)
    if opening is None:
        return Decision(EventStatus.PLANNED, None)
    if expires_at is not None and expires_at <= opening:
        return Decision(
            EventStatus.EXPIRED,
            f"quiet hours ({window} {tz.key}): the occasion expires at {expires_at.isoformat()}, "
            f"before the sending window opens at {opening.isoformat()}",
        )
    return Decision(EventStatus.DEFERRED, window.deferral(opening, tz), opening)
