"""Enqueue many Dramatiq messages per broker round trip (Redis pipeline, AMQP transaction).

``Actor.send`` costs one round trip per message: at 1 ms a trip a million events take over
15 minutes. The messages built here are exactly the ones ``Actor.send`` builds
(``actor.message(...)``, encoded by the broker's encoder) and land in the same Redis keys or
AMQP queue, so a standard Dramatiq worker consumes them; the broker's middleware still sees
``before_enqueue``/``after_enqueue`` for each message.

Durability: the Redis pipeline is as durable as ``RedisBroker.enqueue`` (Redis's own
persistence settings decide). For RabbitMQ a batch is published in an AMQP transaction on a
channel of its own: ``tx.commit`` returns after the broker has taken every persistent
message of the batch, the same guarantee publisher confirms give per message, paid once per
batch. A batch lost in between (the connection drops before the commit) is not lost for
good: its events stay ``planned`` in the outbox and the next run re-queues them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from uuid import uuid4

from dramatiq import Broker, Message
from dramatiq.common import current_millis

log = logging.getLogger(__name__)

BATCH = 1_000  # messages per round trip: big enough to amortise it, small enough to retry cheaply


def enqueue_many(broker: Broker, actor: Any, arg_lists: Sequence[Sequence[Any]]) -> int:
    """Send ``actor`` one message per argument list, in batches; returns how many were sent."""
    messages = [actor.message(*args) for args in arg_lists]
    for start in range(0, len(messages), BATCH):
        batch = messages[start : start + BATCH]
        kind = type(broker).__name__
        if kind == "RedisBroker":
            _redis_batch(broker, batch)
        elif kind == "RabbitmqBroker":
            _amqp_batch(broker, batch)
        else:  # the in-process broker: a call is not a round trip
            for message in batch:
                broker.enqueue(message)
    return len(messages)


def _redis_batch(broker: Any, messages: list[Message[Any]]) -> None:
    """What ``RedisBroker.enqueue`` does per message, with its dispatch script run in one pipeline."""
    dispatch = broker.scripts["dispatch"]
    pipe = broker.client.pipeline(transaction=False)
    sent = []
    for message in messages:
        message = message.copy(options={"redis_message_id": str(uuid4())})
        broker.emit_before("enqueue", message, None)
        # The argument layout of dramatiq's dispatch.lua (see RedisBroker._dispatch); maintenance
        # (reaping dead workers' messages) is left to the consumers, which run it anyway.
        args = [
            "enqueue",
            current_millis(),
            message.queue_name,
            broker.broker_id,
            broker.heartbeat_timeout,
            broker.dead_message_ttl,
            0,
            broker._max_unpack_size(),
            message.options["redis_message_id"],
            message.encode(),
        ]
        dispatch(args=args, keys=[broker.namespace], client=pipe)
        sent.append(message)
    pipe.execute()
    for message in sent:
        broker.emit_after("enqueue", message, None)


def _amqp_batch(broker: Any, messages: list[Message[Any]]) -> None:
    """Publish a batch in one AMQP transaction on a channel of its own (the broker's is in confirm mode)."""
    import pika

    queues = {m.queue_name for m in messages}
    for queue in queues:
        broker.declare_queue(queue, ensure=True)
    channel = broker.connection.channel()
    try:
        channel.tx_select()
        for message in messages:
            broker.emit_before("enqueue", message, None)
            channel.basic_publish(
                exchange="",
                routing_key=message.queue_name,
                body=message.encode(),
                properties=pika.BasicProperties(
                    delivery_mode=2, priority=message.options.get("broker_priority")
                ),
            )
        channel.tx_commit()  # one round trip: the broker now holds the whole batch
    finally:
        if channel.is_open:
            channel.close()
    for message in messages:
        broker.emit_after("enqueue", message, None)
