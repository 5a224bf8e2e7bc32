"""Everything a process needs, built once from the settings: database, plugins, templates, channels."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, create_engine, inspect, select
from sqlalchemy.orm import Session, sessionmaker

from careflow.channels.base import Channel
from careflow.config import CHANNEL_NAMES, Settings
from careflow.errors import ConfigError
from careflow.plugin_manager import PluginRegistry, load_plugins
from careflow.rendering.database import DatabaseTemplates
from careflow.rendering.store import TemplateStore
from careflow.storage.db import make_engine, make_session_factory, migrate
from careflow.storage.models import Center, utcnow


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    registry: PluginRegistry
    templates: TemplateStore
    # What "now" is for this process's sends; ``careflow run --now`` pretends (see ``pretending``).
    clock: Callable[[], datetime] = utcnow
    _channels: dict[str, Channel] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _read_engine: Engine | None = None

    @classmethod
    def build(
        cls, settings: Settings, *, registry: PluginRegistry | None = None, migrate_schema: bool = False
    ) -> Runtime:
        """Validate plugins' settings against their schemas and connect; fails fast with clear errors."""
        registry = registry or load_plugins()
        registry.plugin_settings(settings)  # raises ConfigError naming the key
        for channel, chosen in settings.channels.items():
            provider = registry.providers.get(chosen.provider)
            if provider is None:
                known = ", ".join(sorted(registry.providers))
                raise ConfigError(
                    f"channels.{channel}.provider: unknown provider {chosen.provider!r} (known: {known})"
                )
            if channel not in provider.channels:
                raise ConfigError(f"channels.{channel}.provider: {chosen.provider!r} cannot send {channel}")
        engine = make_engine(settings.database.url, echo=settings.database.echo)
        if migrate_schema:
            migrate(engine)
        elif not inspect(engine).has_table("alembic_version"):
            raise ConfigError(
                f"database {engine.url.render_as_string(hide_password=True)} is not initialised: "
                "run 'careflow init'"
            )
        runtime = cls(
            settings=settings,
            engine=engine,
            sessions=make_session_factory(engine),
            registry=registry,
            templates=TemplateStore(
                settings.templates.dir, registry.template_dirs, DatabaseTemplates(engine)
            ),
        )
        runtime.sync_centers()
        return runtime

    def sync_centers(self) -> None:
        """Centers are configured in careflow.toml; the database mirrors them by code."""
        with self.sessions.begin() as session:
            existing = {c.code: c for c in session.scalars(select(Center))}
            for code, cfg in self.settings.centers.items():
                center = existing.get(code)
                if center is None:
                    center = Center(code=code)
                    session.add(center)
                center.name, center.timezone, center.locale = cfg.name, cfg.timezone, cfg.locale
                center.country = cfg.country_in_effect

    def now(self) -> datetime:
        """The current instant as this process's deliveries see it."""
        return self.clock()

    @contextmanager
    def pretending(self, now: datetime) -> Iterator[None]:
        """Within the block, ``now()`` starts at ``now`` and runs on with the real clock.

        So a run told to pretend an instant (``careflow run --now``) delivers what it plans
        under the same clock: quiet hours and expiry agree between planning and sending.
        """
        offset = now - utcnow()
        if abs(offset) < timedelta(seconds=1):
            yield
            return
        saved = self.clock
        self.clock = lambda: utcnow() + offset
        try:
            yield
        finally:
            self.clock = saved

    @contextmanager
    def quick_read(self) -> Iterator[Connection]:
        """A connection for one small read outside any transaction: no lock, no BEGIN round trip.

        Delivery re-checks consent with it just before each send. On SQLite a plain engine
        (careflow's own takes the write lock at BEGIN); WAL lets it read beside a writer.
        """
        if self._read_engine is None:
            if self.engine.dialect.name == "sqlite":
                self._read_engine = create_engine(
                    self.engine.url, connect_args={"timeout": 30, "check_same_thread": False}
                )
            else:
                self._read_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        with self._read_engine.connect() as connection:
            yield connection

    def channel(self, name: str) -> Channel:
        """The configured sender for a channel, created once per process (clients pool connections)."""
        with self._lock:
            if name not in self._channels:
                chosen = self.settings.channels.get(name)
                if chosen is None:
                    raise ConfigError(
                        f"channel {name!r} is not configured: add [channels.{name}] to careflow.toml"
                    )
                provider = self.registry.providers[chosen.provider]
                self._channels[name] = provider.create(self.settings, name)
            return self._channels[name]

    def channel_order(self) -> list[str]:
        """Channels in the order events fall back through them."""
        return list(self.settings.channels)

    def channel_route(self, center_code: str) -> tuple[list[str], dict[str, str]]:
        """A center's fallback order, and why any channel in it cannot be used right now."""
        center = self.settings.centers.get(center_code)
        order = list(center.channel_order) if center else list(self.settings.channels)
        unavailable: dict[str, str] = {}
        for name in {*order, *CHANNEL_NAMES}:
            chosen = self.settings.channels.get(name)
            if chosen is None:
                unavailable[name] = "channel not configured"
            elif not chosen.enabled:
                unavailable[name] = "channel switched off"
        return order, unavailable

    def close(self) -> None:
        self.templates.close()
        if self._read_engine is not None and self._read_engine.dialect.name == "sqlite":
            self._read_engine.dispose()
        self.engine.dispose()
