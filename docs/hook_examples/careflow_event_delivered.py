import logging

from careflow import CareEvent, hookimpl

audit = logging.getLogger("acme.audit")


@hookimpl
def careflow_event_delivered(event: CareEvent) -> None:
    audit.info("sent %s to customer %s via %s", event.idempotency_key, event.customer_id, event.channel)
