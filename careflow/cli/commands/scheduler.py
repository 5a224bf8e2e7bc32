"""``careflow scheduler``: the always-on service (plans days, recovers sends, releases deferred events)."""

from __future__ import annotations

import os
import signal
import socket
import threading

import click

from careflow.cli.base import friendly_errors, opened_runtime
from careflow.storage.models import utcnow


def register(main: click.Group) -> None:
    """Add this module's commands to the ``careflow`` group (see careflow.cli.app)."""
    main.add_command(scheduler)


def _say(message: str) -> None:
    # Plain timestamped lines: this runs under a service manager that collects stderr.
    click.echo(f"{utcnow().isoformat(timespec='milliseconds')} careflow scheduler: {message}", err=True)


@click.command()
@click.option("--holder", help="Name in the lease (default: host:pid).")
@click.option("--once", is_flag=True, help="One round (lease, plan, recover), then exit.")
@friendly_errors
def scheduler(holder: str | None, once: bool) -> None:
    """Run as a service: plan each center at its plan_at, recover stuck sends, re-queue lost ones.

    Run one on each of several hosts if you like: a lease in the database lets exactly one
    work, and a standby takes over when the leader's lease (scheduler.lease_seconds) expires.
    """
    from dramatiq import Worker

    from careflow.delivery.actors import build_actors
    from careflow.delivery.broker import LOCAL, make_broker
    from careflow.service.scheduler import LEASE_NAME, SchedulerService
    from careflow.storage import leases

    with opened_runtime(long_running=True) as runtime:
        settings = runtime.settings
        broker = make_broker(settings.broker.url, settings.broker)
        actors = build_actors(broker, runtime)
        worker = None
        if settings.broker.url == LOCAL:  # nobody else consumes an in-process queue
            worker = Worker(broker, worker_threads=settings.broker.worker_threads)
            worker.start()
        service = SchedulerService(
            runtime,
            holder=holder or f"{socket.gethostname()}:{os.getpid()}",
            enqueue=actors.enqueue_deliveries,
            report=_say,
        )
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        _say(f"started as {service.holder}; jobs: {', '.join(job.name for job in service.jobs)}")
        try:
            if once:
                service.tick()
                if service.leader:  # a one-off round must not keep a standby waiting for the lease
                    leases.release(runtime.sessions, LEASE_NAME, service.holder, now=utcnow())
                if worker is not None:
                    from dramatiq.brokers.stub import StubBroker

                    assert isinstance(broker, StubBroker)
                    broker.join(actors.queue, fail_fast=False)
            else:
                service.serve(stop)
        finally:
            _say("stopping")
            if worker is not None:
                worker.stop()
            broker.close()
