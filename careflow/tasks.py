"""Dramatiq actors, built for an explicit broker and runtime.

Dramatiq's ``@actor`` binds to the *global* broker when the decorator runs, so a module of
decorated functions silently talks to a default RabbitMQ broker unless the broker was set
first. careflow builds its actors here, on the broker built from the configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq import Broker

from careflow import metrics
from careflow.delivery import Outcome, deliver
from careflow.enqueue import enqueue_many
from careflow.runtime import Runtime
from careflow.sharding import build_shard_actor

log = logging.getLogger(__name__)


@dataclass
class Actors:
    broker: Broker
    queue: str
    deliver: Any  # dramatiq.Actor[[int], None]
    plan_shard: Any = None  # dramatiq.Actor[[int], None], see careflow.sharding

    def enqueue_deliveries(self, event_ids: Sequence[int]) -> None:
        """One message per event; the outbox row, not the message, decides whether it is sent."""
        enqueue_many(self.broker, self.deliver, [(event_id,) for event_id in event_ids])


def build_actors(broker: Broker, runtime: Runtime) -> Actors:
    settings = runtime.settings
    delivery = settings.delivery

    def deliver_event(event_id: int) -> None:
        outcome = deliver(runtime, event_id)
        if metrics.enabled():
            _observe(runtime, event_id, outcome)
        if outcome is Outcome.RETRY:
            # Retry is not logged as an error by Dramatiq; the backoff comes from the actor options.
            raise dramatiq.Retry(f"event {event_id}: transient failure, will retry")

    actor = dramatiq.actor(
        broker=broker,
        actor_name="careflow_deliver",
        queue_name=settings.broker.queue,
        # The database counts attempts and fails the event after the last one; the broker's
        # own limit is a little higher so it never drops a message the database still wants.
        max_retries=delivery.max_attempts + 2,
        min_backoff=delivery.min_backoff_ms,
        max_backoff=delivery.max_backoff_ms,
        time_limit=delivery.time_limit_ms,
        max_age=None,
    )(deliver_event)
    broker.declare_queue(settings.broker.queue)
    actors = Actors(broker=broker, queue=settings.broker.queue, deliver=actor)
    actors.plan_shard = build_shard_actor(broker, runtime, actors.enqueue_deliveries)
    return actors


def _observe(runtime: Runtime, event_id: int, outcome: Outcome) -> None:
    """Count a delivery outcome per plugin and center (one small query, only with metrics on)."""
    from sqlalchemy import select

    from careflow.models import CareEvent, Center, utcnow

    with runtime.sessions() as session:
        row = session.execute(
            select(CareEvent.plugin, Center.code, CareEvent.created_at)
            .join(Center, Center.id == CareEvent.center_id)
            .where(CareEvent.id == event_id)
        ).first()
    if row is not None:
        metrics.observe_delivery(row[0], row[1], str(outcome), row[2], utcnow())
