"""Apply the provider's delivery reports (Twilio status callbacks) to care events.

A report names the provider's message id. Usually careflow has recorded that id on its event
by then; but a batch records its accepted sends every ``RECORD_EVERY_SECONDS``, and a worker
that died between the send and the record leaves the id to recovery, which finds the message
at the provider later. A final report (delivered, undelivered, failed) that finds no event
is therefore *parked* in ``early_statuses``, and applied as soon as the id is recorded:
by the delivery that records it, or else by the scheduler's ``provider-reports`` job.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session

from careflow.policies.consent import withdraw_for_carrier_opt_out
from careflow.storage.models import CareEvent, EarlyStatus, EventStatus, utcnow

log = logging.getLogger(__name__)

CARRIER_OPT_OUT = "21610"  # Twilio: the recipient replied STOP to this sender
# A parked report whose message never turns up (its send was never recorded) is dropped then.
PARKED_FOR = timedelta(days=7)

# Twilio's message statuses -> the event status they mean. Twilio's intermediate states
# (queued, accepted, sending) are all "the provider has it": our ``sent``.
STATUS_MAP: dict[str, EventStatus] = {
    "accepted": EventStatus.SENT,
    "scheduled": EventStatus.SENT,
    "queued": EventStatus.SENT,
    "sending": EventStatus.SENT,
    "sent": EventStatus.SENT,
    "delivered": EventStatus.DELIVERED,
    "undelivered": EventStatus.UNDELIVERED,
    "failed": EventStatus.FAILED,
}
# A final provider report may only replace ``sent``: a status never moves backwards, and
# the first final report wins (repeats and late out-of-order callbacks change nothing).
MAY_REPLACE: dict[EventStatus, tuple[EventStatus, ...]] = {
    EventStatus.DELIVERED: (EventStatus.SENT,),
    EventStatus.UNDELIVERED: (EventStatus.SENT,),
    EventStatus.FAILED: (EventStatus.SENT,),
}


def apply_report(
    session: Session, sid: str, reported: str, error_code: str | None, *, now: datetime | None = None
) -> str:
    """Apply one report: "applied", "no change", or "parked" (no event has that message yet).

    ``reported`` must be a key of ``STATUS_MAP``.
    """
    target = STATUS_MAP[reported.lower()]
    if target not in MAY_REPLACE:
        return "no change"  # "the provider has it" is what ``sent`` already says
    if _apply(session, sid, reported, target, error_code):
        return "applied"
    if session.scalar(select(exists().where(CareEvent.provider_message_id == sid))):
        return "no change"
    session.add(
        EarlyStatus(
            provider_message_id=sid, status=reported, error_code=error_code, received_at=now or utcnow()
        )
    )
    return "parked"


def apply_parked(
    session: Session, sids: Collection[str] | None = None, *, now: datetime | None = None
) -> int:
    """Apply parked reports whose message is now recorded on an event (only ``sids``, if given).

    Each is applied in the order it arrived, then removed; reports parked longer than
    ``PARKED_FOR`` are dropped. Returns how many were applied.
    """
    query = (
        select(EarlyStatus)
        .where(exists().where(CareEvent.provider_message_id == EarlyStatus.provider_message_id))
        .order_by(EarlyStatus.received_at, EarlyStatus.id)
    )
    if sids is not None:
        if not sids:
            return 0
        query = query.where(EarlyStatus.provider_message_id.in_(sorted(set(sids))))
    applied = 0
    for parked in session.scalars(query).all():
        target = STATUS_MAP.get(parked.status.lower())
        if target is not None and _apply(
            session, parked.provider_message_id, parked.status, target, parked.error_code
        ):
            applied += 1
            log.info(
                "status report for %s: %s applied (it arrived before the send was recorded)",
                parked.provider_message_id,
                parked.status,
            )
        session.delete(parked)
    if sids is None:
        session.execute(delete(EarlyStatus).where(EarlyStatus.received_at < (now or utcnow()) - PARKED_FOR))
    return applied


def _apply(session: Session, sid: str, reported: str, target: EventStatus, error_code: str | None) -> bool:
    values: dict[str, object] = {"status": target}
    if error_code:
        values["error_code"] = error_code
        values["status_reason"] = f"Twilio reported {reported} (error {error_code})"
    result = session.execute(
        update(CareEvent)
        .where(CareEvent.provider_message_id == sid, CareEvent.status.in_(MAY_REPLACE[target]))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    changed = getattr(result, "rowcount", 0) == 1
    if changed and error_code == CARRIER_OPT_OUT:
        event = session.scalars(select(CareEvent).where(CareEvent.provider_message_id == sid)).one()
        if event.channel:
            withdraw_for_carrier_opt_out(session, event.customer_id, event.channel, event.recipient)
    return changed
