"""pytest fixtures for careflow and its plugins (auto-registered as the ``careflow`` pytest plugin)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from careflow.runtime import Runtime
from careflow.storage.db import make_engine, make_session_factory, migrate
from careflow.testing.capture import CapturingProvider
from careflow.testing.clock import DEFAULT_INSTANT, FrozenClock
from careflow.testing.factories import Factories
from careflow.testing.helpers import RuntimeFactory, build_runtime, make_settings
from careflow.testing.twilio_server import FakeTwilio

CLOCK_MARKER = "careflow_now"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{CLOCK_MARKER}(at, tz='UTC'): start the careflow_clock fixture at this instant "
        "(naive text is wall-clock time in tz)",
    )


@pytest.fixture
def careflow_db_url(tmp_path: Path) -> str:
    """A fresh SQLite database file for one test."""
    return f"sqlite:///{tmp_path / 'careflow.db'}"


@pytest.fixture
def careflow_db(careflow_db_url: str) -> str:
    """The URL of a fresh SQLite database migrated to careflow's newest schema."""
    engine = make_engine(careflow_db_url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    return careflow_db_url


@pytest.fixture
def careflow_runtime(careflow_db_url: str) -> Iterator[Runtime]:
    """A migrated runtime on SQLite with the local broker, the console channel and every installed plugin."""
    runtime = build_runtime(make_settings(careflow_db_url))
    yield runtime
    runtime.close()


@pytest.fixture
def careflow_make_runtime(careflow_db: str) -> Iterator[RuntimeFactory]:
    """Build runtimes on the test's database: ``careflow_make_runtime(plugins={"x": {...}}, centers=...)``.

    ``plugins`` maps care plugin names to their settings (``enabled`` defaults to true) or
    lists names to enable; ``extra_plugins`` are registered like installed packages; other
    keyword arguments are settings sections (``channels={...}``, ``scheduler={...}``).
    Every installed plugin (entry point) is loaded too, as in production. Centers send around
    the clock with no frequency cap unless a test sets ``send_from``/``send_until``/
    ``frequency_cap``: a plugin's tests are about when its customers are due, and quiet hours
    or caps would defer or suppress what they look for.
    """
    built: list[Runtime] = []

    def make(
        *,
        plugins: Mapping[str, Mapping[str, Any]] | Iterable[str] = (),
        extra_plugins: Iterable[object] = (),
        entry_points: bool = True,
        **sections: Any,
    ) -> Runtime:
        if isinstance(plugins, Mapping):
            chosen = {name: {"enabled": True, **dict(cfg)} for name, cfg in plugins.items()}
        else:
            chosen = {name: {"enabled": True} for name in plugins}
        centers = {code: dict(cfg) for code, cfg in (sections.pop("centers", None) or {"main": {}}).items()}
        for cfg in centers.values():
            cfg.setdefault("send_from", "00:00")
            cfg.setdefault("send_until", "24:00")
            cfg.setdefault("frequency_cap", 0)
        settings = make_settings(careflow_db, plugins=chosen, centers=centers, **sections)
        runtime = build_runtime(settings, extra_plugins=extra_plugins, entry_points=entry_points)
        built.append(runtime)
        return runtime

    yield make
    for runtime in built:
        runtime.close()


@pytest.fixture
def careflow_factories(careflow_db: str) -> Iterator[Factories]:
    """Customer / vehicle / visit factories writing to the test's database (build a runtime first)."""
    engine = make_engine(careflow_db)
    yield Factories(make_session_factory(engine))
    engine.dispose()


@pytest.fixture
def careflow_clock(request: pytest.FixtureRequest) -> FrozenClock:
    """A frozen clock; pass ``careflow_clock.now`` wherever careflow takes ``now=``.

    Starts at ``@pytest.mark.careflow_now("2026-12-01 08:00", tz="Europe/Oslo")`` when the
    test has that marker, else at 2026-05-11 09:00 in Shanghai.
    """
    marker = request.node.get_closest_marker(CLOCK_MARKER)
    if marker is None:
        return FrozenClock(DEFAULT_INSTANT, tz="Asia/Shanghai")
    return FrozenClock(*marker.args, **marker.kwargs)


@pytest.fixture
def careflow_capture() -> CapturingProvider:
    """A capturing channel provider: register it as an extra plugin; route channels to ``capture``."""
    return CapturingProvider()


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    """A local Twilio-compatible API server; point ``[twilio] base_url`` at ``fake_twilio.url``."""
    with FakeTwilio() as server:
        yield server
