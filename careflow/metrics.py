"""Prometheus metrics: careflow's own (events per plugin/center/outcome, planning time, queue lag).

Workers expose them with Dramatiq's Prometheus middleware on ``careflow worker --metrics-port``;
``metrics_app()`` is an ASGI app to mount in a web process (e.g. ``careflow serve`` at
``/metrics``). Nothing here is imported unless metrics are used: ``prometheus_client`` decides
between single- and multi-process storage when it is first imported, so a worker sets
``PROMETHEUS_MULTIPROC_DIR`` (see ``enable_worker_metrics``) before that happens.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

_lock = threading.Lock()
_metrics: Metrics | None = None
_enabled = False


@dataclass(frozen=True)
class Metrics:
    events: Any  # Counter{plugin, center, outcome}
    planning_seconds: Any  # Histogram
    queue_lag_seconds: Any  # Histogram{plugin}: from recorded in the outbox to accepted by the provider


def metrics() -> Metrics:
    """The metric objects, created once per process in the default registry."""
    global _metrics
    with _lock:
        if _metrics is None:
            from prometheus_client import Counter, Histogram

            _metrics = Metrics(
                events=Counter(
                    "careflow_events",
                    "Care events by plugin, center and outcome (planned, suppressed, sent, failed, retry).",
                    ["plugin", "center", "outcome"],
                ),
                planning_seconds=Histogram(
                    "careflow_planning_seconds",
                    "Time to plan one id range (a whole run, or one shard on a worker).",
                    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
                ),
                queue_lag_seconds=Histogram(
                    "careflow_queue_lag_seconds",
                    "From an event's recording in the outbox to its acceptance by the provider.",
                    ["plugin"],
                    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
                ),
            )
        return _metrics


def enabled() -> bool:
    """Whether this process records metrics (a worker with --metrics-port, or after ``metrics_app``)."""
    return _enabled


def count_events(plugin: str, center: str | int, outcome: str, n: int = 1) -> None:
    if _enabled and n:
        metrics().events.labels(plugin, str(center), outcome).inc(n)


def observe_planning(seconds: float) -> None:
    if _enabled:
        metrics().planning_seconds.observe(seconds)


def observe_delivery(
    plugin: str, center: str | int, outcome: str, created_at: datetime, now: datetime
) -> None:
    if not _enabled:
        return
    count_events(plugin, center, outcome)
    if outcome == "sent":
        metrics().queue_lag_seconds.labels(plugin).observe(max(0.0, (now - created_at).total_seconds()))


def enable_worker_metrics(broker: Any, port: int, host: str = "0.0.0.0") -> Callable[[], None]:
    """Serve Dramatiq's and careflow's metrics of this worker process on ``host:port``; returns a stopper.

    Dramatiq's middleware keeps its counters in prometheus_client's multi-process files;
    each worker process gets a directory of its own, so workers on one host never mix.
    """
    global _enabled
    directory = tempfile.mkdtemp(prefix="careflow-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    os.environ["prometheus_multiproc_dir"] = directory  # noqa: SIM112 (older prometheus_client)
    os.environ["dramatiq_prom_db"] = directory  # noqa: SIM112 (Dramatiq's own spelling)
    from dramatiq.middleware.prometheus import Prometheus
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    middleware = Prometheus()
    broker.add_middleware(middleware)
    middleware.after_process_boot(broker)  # type: ignore[no-untyped-call]  # what `dramatiq` does in each forked worker process
    _enabled = True
    metrics()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        thread.join(timeout=5)

    return stop


def metrics_app() -> Any:
    """An ASGI app serving this process's metrics (mount it at ``/metrics`` in ``careflow serve``)."""
    global _enabled
    from prometheus_client import REGISTRY, CollectorRegistry, make_asgi_app, multiprocess

    _enabled = True
    metrics()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return make_asgi_app(registry=registry)
    return make_asgi_app(registry=REGISTRY)
