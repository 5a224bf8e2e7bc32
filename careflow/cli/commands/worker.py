"""``careflow worker``: deliver queued care events from Redis or RabbitMQ until stopped."""

from __future__ import annotations

import signal
import threading

import click

from careflow.cli.base import err, friendly_errors, opened_runtime
from careflow.errors import CareflowError


def register(main: click.Group) -> None:
    """Add this module's commands to the ``careflow`` group (see careflow.cli.app)."""
    main.add_command(worker)


@click.command()
@click.option("--threads", type=int, help="Worker threads (default: [broker] worker_threads).")
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics on this port (0.0.0.0).")
@friendly_errors
def worker(threads: int | None, metrics_port: int | None) -> None:
    """Deliver queued care events from the Redis or RabbitMQ broker until stopped (SIGTERM/Ctrl-C)."""
    from dramatiq import Worker

    from careflow.delivery.actors import build_actors
    from careflow.delivery.broker import LOCAL, make_broker

    with opened_runtime(long_running=True) as runtime:
        if runtime.settings.broker.url == LOCAL:
            raise CareflowError(
                "[broker] url is 'local': 'careflow run' delivers in-process; "
                "set a redis:// or amqp:// URL to run separate workers"
            )
        broker = make_broker(runtime.settings.broker.url, runtime.settings.broker)
        build_actors(broker, runtime)
        stop_metrics = None
        if metrics_port is not None:
            from careflow.metrics import enable_worker_metrics

            stop_metrics = enable_worker_metrics(broker, metrics_port)
            err.print(f"careflow worker: metrics on http://0.0.0.0:{metrics_port}/metrics")
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        worker_ = Worker(broker, worker_threads=threads or runtime.settings.broker.worker_threads)
        worker_.start()
        thread_count = threads or runtime.settings.broker.worker_threads
        err.print(f"careflow worker: {thread_count} threads consuming {runtime.settings.broker.queue!r}")
        try:
            stop.wait()
        finally:
            err.print("careflow worker: stopping (finishing the messages in hand)")
            worker_.stop()
            broker.close()
            if stop_metrics is not None:
                stop_metrics()
