"""Care events as the CLI shows them: one plain record each, read in chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from careflow.storage.models import CareEvent, Customer

if TYPE_CHECKING:
    from careflow.runtime import Runtime


def events_by_keys(runtime: Runtime, keys: Sequence[str]) -> Iterator[tuple[CareEvent, Customer]]:
    """The events with these keys, read a thousand at a time (a big run is never all in memory)."""
    with runtime.sessions() as session:
        for start in range(0, len(keys), 1_000):
            chunk = keys[start : start + 1_000]
            rows = session.execute(
                select(CareEvent, Customer)
                .join(Customer, Customer.id == CareEvent.customer_id)
                .where(CareEvent.idempotency_key.in_(chunk))
                .order_by(CareEvent.id)
            )
            yield from rows
            session.expunge_all()


def event_record(event: CareEvent, customer: Customer) -> dict[str, Any]:
    """One event as ``--json`` prints it: what was planned, for whom, and how it went."""
    return {
        "id": event.id,
        "key": event.idempotency_key,
        "plugin": event.plugin,
        "customer": customer.external_id,
        "name": customer.name,
        "due_date": event.due_date.isoformat(),
        "channel": event.channel,
        "to": event.recipient,
        "channel_reason": event.channel_reason,
        "body": event.body,
        "status": event.status,
        "reason": event.status_reason,
        "error_code": event.error_code,
        "attempts": event.attempts,
        "provider_message_id": event.provider_message_id,
    }
