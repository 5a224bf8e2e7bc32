import logging

from sqlalchemy.orm import Session

from careflow import InboundReply, hookimpl

log = logging.getLogger("acme.survey")


@hookimpl
def careflow_reply_received(session: Session, reply: InboundReply) -> None:
    text = reply.body.strip()
    if reply.customer_id is None or text not in {"1", "2", "3", "4", "5"}:
        return  # not an answer to our survey
    log.info("customer %s rated their visit %s", reply.customer_id, text)
    # A real survey plugin stores the rating through `session` (the webhook commits it).
