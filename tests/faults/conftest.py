"""Fixtures of the fault-injection suite: a Redis of its own, a RabbitMQ vhost of its own, deployments."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from careflow.testing.twilio_server import FakeTwilio
from tests.faults.harness import Deployment, RabbitVhost, RedisServer


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.answers():
            server.stop()


@pytest.fixture
def rabbit_vhost() -> Iterator[RabbitVhost]:
    vhost = RabbitVhost()
    vhost.create()
    try:
        yield vhost
    finally:
        vhost.delete()


@pytest.fixture
def deploy(tmp_path: Path, fake_twilio: FakeTwilio) -> Iterator[Callable[..., Deployment]]:
    """Build a deployment; every process it started is stopped at the end, whatever happened."""
    made: list[Deployment] = []

    def make(*, db_url: str, broker_url: str, **settings: dict[str, Any]) -> Deployment:
        deployment = Deployment(
            tmp_path,
            fake_twilio,
            db_url,
            broker_url,
            {name.replace("__", "."): values for name, values in settings.items()},
        )
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.stop_all()
