"""The planned outbox row, and the decisions the policies take on it.

The planner builds one ``PlannedRow`` per occasion (after channel choice); the timing
pipeline (``careflow.policies.timing``) passes the rows through expiry, bundling, the
frequency cap and quiet hours, each of which returns ``Decision`` s rather than changing a
row; the pipeline applies them (``PlannedRow.decided``) in that order. The outbox insert,
the CLI's and the console's dry runs read the result. Rows are frozen: what a policy
decided is visible only in what it returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from careflow.storage.models import EventStatus


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's verdict on one row: its status from now on, why, and when it may go out.

    ``reason`` is recorded on the event (``status_reason``); ``not_before`` is set only for
    ``deferred`` (the opening of the sending window), and cleared otherwise.
    """

    status: EventStatus
    reason: str | None
    not_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class PlannedRow:
    """One care event as planning would record it in the outbox (``care_events``).

    Field names are the table's columns, so ``as_columns`` is the row to insert.
    """

    idempotency_key: str  # plugin:occasion:period:customer (``careflow.planning.outbox.idempotency_key``)
    center_id: int  # the customer's center
    customer_id: int
    plugin: str  # the care plugin that found the occasion; ``bundle`` for a bundle row
    occasion: str  # the occasion's key, e.g. ``birthday``
    period: str  # which occurrence of it, e.g. ``2026``; with the key, once per period
    purpose: str  # ``service`` or ``marketing``: which consent it needs
    priority: int  # who wins under the frequency cap (higher first), and a bundle's order
    due_date: date  # the customer's local day the occasion falls on
    channel: str | None  # the chosen channel; None when nobody can be reached
    recipient: str | None  # the address on that channel
    channel_reason: str  # why that channel (``ChannelChoice.why``), shown by dry runs
    template: str  # the template name (the occasion's own, else the plugin's)
    locale: str  # the customer's locale, else their center's
    context: dict[str, Any]  # the occasion's template variables (plain JSON data, never changed)
    status: EventStatus  # planned, suppressed, expired or deferred once the policies have run
    status_reason: str | None  # why it is not planned (or what it gave way to), as recorded
    expires_at: datetime | None  # past this instant the occasion is not worth sending
    not_before: datetime | None = None  # deferred: when the sending window opens

    def decided(self, decision: Decision) -> PlannedRow:
        """This row with a policy's decision applied: status, reason and ``not_before``.

        Spelled out rather than ``dataclasses.replace``, which costs twice as much: a night's
        run defers every row (tests/test_planned_rows.py checks that nothing else changes).
        """
        return PlannedRow(
            self.idempotency_key,
            self.center_id,
            self.customer_id,
            self.plugin,
            self.occasion,
            self.period,
            self.purpose,
            self.priority,
            self.due_date,
            self.channel,
            self.recipient,
            self.channel_reason,
            self.template,
            self.locale,
            self.context,
            decision.status,
            decision.reason,
            self.expires_at,
            decision.not_before,
        )

    def as_columns(self) -> dict[str, Any]:
        """The ``care_events`` values to insert (built once per row, at the insert)."""
        return {
            "idempotency_key": self.idempotency_key,
            "center_id": self.center_id,
            "customer_id": self.customer_id,
            "plugin": self.plugin,
            "occasion": self.occasion,
            "period": self.period,
            "purpose": self.purpose,
            "priority": self.priority,
            "due_date": self.due_date,
            "channel": self.channel,
            "recipient": self.recipient,
            "channel_reason": self.channel_reason,
            "template": self.template,
            "locale": self.locale,
            "context": self.context,
            "status": self.status,
            "status_reason": self.status_reason,
            "expires_at": self.expires_at,
            "not_before": self.not_before,
        }
