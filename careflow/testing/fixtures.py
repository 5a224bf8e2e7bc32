"""pytest fixtures for careflow and its plugins (auto-registered as the ``careflow`` pytest plugin)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from careflow.runtime import Runtime
from careflow.testing import build_runtime, make_settings
from careflow.testing.twilio_server import FakeTwilio


@pytest.fixture
def careflow_db_url(tmp_path: Path) -> str:
    """A fresh SQLite database file for one test."""
    return f"sqlite:///{tmp_path / 'careflow.db'}"


@pytest.fixture
def careflow_runtime(careflow_db_url: str) -> Iterator[Runtime]:
    """A migrated runtime on SQLite with the local broker, the console channel and every installed plugin."""
    runtime = build_runtime(make_settings(careflow_db_url))
    yield runtime
    runtime.close()


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    """A local Twilio-compatible API server; point ``[twilio] base_url`` at ``fake_twilio.url``."""
    with FakeTwilio() as server:
        yield server
