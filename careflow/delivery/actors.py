"""Dramatiq actors, built for an explicit broker and runtime.

Dramatiq's ``@actor`` binds to the *global* broker when the decorator runs, so a module of
decorated functions silently talks to a default RabbitMQ broker unless the broker was set
first. careflow builds its actors here, on the broker built from the configuration.

Two delivery actors: ``careflow_deliver`` takes one event, ``careflow_deliver_batch`` up to
``[delivery] batch_size``. New events travel in batches; an event that needs another try
(a transient failure, or a batch that died under it) travels alone, so its backoff and, for
a poison event, its dead-lettering concern nobody else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq import Broker
from dramatiq.common import compute_backoff

from careflow import metrics
from careflow.delivery.batch import deliver, deliver_many
from careflow.delivery.enqueue import enqueue_many
from careflow.delivery.results import BatchResult, Outcome
from careflow.planning.shards import plan_shard

if TYPE_CHECKING:
    from careflow.runtime import Runtime

log = logging.getLogger(__name__)

# A batch hands back what it has not sent after this share of the time limit, so it ends
# well before Dramatiq interrupts it (and before recovery would call its claims stuck).
BATCH_TIME_SHARE = 0.5


@dataclass
class Actors:
    broker: Broker
    queue: str
    deliver: Any  # dramatiq.Actor[[int], None]
    deliver_batch: Any = None  # dramatiq.Actor[[list[int]], None]
    batch_size: int = 1
    plan_shard: Any = None  # dramatiq.Actor[[int], None], see careflow.planning.shards

    def enqueue_deliveries(self, event_ids: Sequence[int]) -> None:
        """Queue the events in messages of ``batch_size``; the outbox row decides whether each is sent."""
        if self.batch_size <= 1 or len(event_ids) == 1:
            enqueue_many(self.broker, self.deliver, [(event_id,) for event_id in event_ids])
            return
        size = self.batch_size
        batches = [list(event_ids[i : i + size]) for i in range(0, len(event_ids), size)]
        enqueue_many(self.broker, self.deliver_batch, [(batch,) for batch in batches])


def build_actors(broker: Broker, runtime: Runtime) -> Actors:
    settings = runtime.settings
    delivery = settings.delivery
    options: dict[str, Any] = {
        "broker": broker,
        "queue_name": settings.broker.queue,
        # The database counts attempts and fails the event after the last one; the broker's
        # own limit is a little higher so it never drops a message the database still wants.
        "max_retries": delivery.max_attempts + 2,
        "min_backoff": delivery.min_backoff_ms,
        "max_backoff": delivery.max_backoff_ms,
        "time_limit": delivery.time_limit_ms,
        "max_age": None,
    }

    def deliver_event(event_id: int) -> None:
        outcome = deliver(runtime, event_id)
        if metrics.enabled():
            _observe(runtime, {event_id: outcome})
        if outcome is Outcome.RETRY:
            # Retry is not logged as an error by Dramatiq; the backoff comes from the actor options.
            raise dramatiq.Retry(f"event {event_id}: transient failure, will retry")

    single = dramatiq.actor(actor_name="careflow_deliver", **options)(deliver_event)

    def deliver_events(event_ids: list[int]) -> None:
        budget = delivery.time_limit_ms / 1000 * BATCH_TIME_SHARE
        result = deliver_many(runtime, event_ids, isolate_retried=True, time_budget=budget)
        if metrics.enabled():
            _observe(runtime, result.outcomes)
        _follow_up(single, batch, result, delivery.min_backoff_ms, delivery.max_backoff_ms)

    batch = dramatiq.actor(actor_name="careflow_deliver_batch", **options)(deliver_events)
    broker.declare_queue(settings.broker.queue)
    actors = Actors(
        broker=broker,
        queue=settings.broker.queue,
        deliver=single,
        deliver_batch=batch,
        batch_size=delivery.batch_size,
    )
    actors.plan_shard = build_shard_actor(broker, runtime, actors.enqueue_deliveries)
    return actors


def build_shard_actor(broker: Broker, runtime: Runtime, enqueue: Callable[[Sequence[int]], None]) -> Any:
    """The ``careflow_plan_shard`` actor on the delivery queue, so every worker can plan shards."""

    def plan_one_shard(shard_id: int) -> None:
        plan_shard(runtime, shard_id, enqueue)

    return dramatiq.actor(
        broker=broker,
        actor_name="careflow_plan_shard",
        queue_name=runtime.settings.broker.queue,
        max_retries=10,
        min_backoff=1_000,
        max_backoff=60_000,
        time_limit=60 * 60 * 1000,  # a shard of a busy day may take minutes, never an hour
        max_age=None,
    )(plan_one_shard)


def _follow_up(single: Any, batch: Any, result: BatchResult, min_backoff: int, max_backoff: int) -> None:
    """Queue what a batch left to do: retries alone, with backoff; handed-back events as a batch.

    If this fails (the broker is away) the batch message fails and Dramatiq redelivers it;
    the redelivered batch finds these events still planned and queues them again.
    """
    for event_id in result.isolated:
        single.send(event_id)
    for event_id, attempt in result.attempts.items():
        _, delay = compute_backoff(attempt - 1, factor=min_backoff, max_backoff=max_backoff)
        single.send_with_options(args=(event_id,), delay=delay)
    if result.released:
        batch.send(result.released)


def _observe(runtime: Runtime, outcomes: dict[int, Outcome]) -> None:
    """Count delivery outcomes per plugin and center (one small query, only with metrics on)."""
    from sqlalchemy import select

    from careflow.storage.models import CareEvent, Center, utcnow

    if not outcomes:
        return
    with runtime.sessions() as session:
        rows = session.execute(
            select(CareEvent.id, CareEvent.plugin, Center.code, CareEvent.created_at)
            .join(Center, Center.id == CareEvent.center_id)
            .where(CareEvent.id.in_(outcomes))
        ).all()
    now = utcnow()
    for event_id, plugin, center, created_at in rows:
        metrics.observe_delivery(plugin, center, str(outcomes[event_id]), created_at, now)
