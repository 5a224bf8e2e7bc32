"""A Dramatiq broker from ``[broker] url``: ``local`` (in-process), ``redis://…`` or ``amqp://…``."""

from __future__ import annotations

from dramatiq import Broker
from dramatiq.brokers.stub import StubBroker

from careflow.config import BrokerSettings

LOCAL = "local"


def make_broker(url: str, settings: BrokerSettings | None = None) -> Broker:
    """Build the broker; nothing is bound to Dramatiq's global broker (see actors.py for why)."""
    if url == LOCAL:
        # In-memory only: the outbox is the durable record, and every run first re-queues
        # whatever is planned but unsent, so losing this queue with the process loses nothing.
        return StubBroker()
    if url.startswith(("redis://", "rediss://")):
        from dramatiq.brokers.redis import RedisBroker

        tuning = settings or BrokerSettings()
        return RedisBroker(  # type: ignore[no-untyped-call]
            url=url,
            heartbeat_timeout=tuning.heartbeat_timeout_ms,
            maintenance_chance=tuning.maintenance_chance,
        )
    if url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        # Publisher confirms: a publish is not done until RabbitMQ has the message.
        return RabbitmqBroker(url=url, confirm_delivery=True)
    raise ValueError(f"unsupported broker URL {url!r}: expected 'local', redis:// or amqp://")
