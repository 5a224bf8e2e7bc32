"""Templates published in the console (the ``template_versions`` table), first in the loader chain.

Names are the same the files use: ``<template>/<channel>.<locale>.j2`` for the global
version and ``centers/<code>/<template>/<channel>.<locale>.j2`` for one center's override.
The newest version of a key is the published one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from jinja2 import BaseLoader, Environment, TemplateNotFound
from sqlalchemy import Engine, create_engine, event, func, select

from careflow.storage.models import TemplateVersion

# A database template's "filename" (db:v<id>/<name>), so errors say which version failed.
DB_PREFIX = "db:"
GENERATION_TTL_SECONDS = 2.0
# Saves and deletions of template versions made by this process (see DatabaseTemplates.generation).
_local_saves = [0]


@event.listens_for(TemplateVersion, "after_insert")
@event.listens_for(TemplateVersion, "after_delete")
def _count_local_save(*_: object) -> None:
    _local_saves[0] += 1


def parse_name(name: str) -> tuple[str, str, str, str] | None:
    """``(scope, template, channel, locale)`` for a template name, or None if it is not one."""
    parts = name.split("/")
    scope = ""
    if len(parts) == 4 and parts[0] == "centers":
        scope, parts = parts[1], parts[2:]
    if len(parts) != 2 or not parts[1].endswith(".j2"):
        return None
    pieces = parts[1][: -len(".j2")].split(".")
    if len(pieces) != 2:
        return None
    return scope, parts[0], pieces[0], pieces[1]


def template_name(scope: str, template: str, channel: str, locale: str) -> str:
    """The loader name of a template key (the inverse of ``parse_name``)."""
    base = f"{template}/{channel}.{locale}.j2"
    return f"centers/{scope}/{base}" if scope else base


class DatabaseTemplates:
    """Reads published template versions on a connection of its own.

    On SQLite the main engine opens every transaction with BEGIN IMMEDIATE; a render that
    happens inside a delivery's write transaction would then wait for itself. Plain reads on
    a separate engine never take the write lock (WAL lets readers run beside a writer).
    """

    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name == "sqlite":
            self.engine = create_engine(engine.url, connect_args={"timeout": 30, "check_same_thread": False})
            self._owns_engine = True
        else:
            self.engine, self._owns_engine = engine, False
        self._cached: tuple[int, int, int] | None = None
        self._checked_at = 0.0
        self._sources: dict[str, tuple[str, int] | None] = {}
        self._sources_generation: tuple[int, int, int] | None = None

    def generation(self) -> tuple[int, int, int]:
        """Changes whenever a version is saved or removed: (highest id, row count, local saves).

        Asked on every template lookup, so the database is asked at most every
        ``GENERATION_TTL_SECONDS``: another process's publish reaches sends within that time,
        this process's own saves (counted by an ORM event) at once.
        """
        now = time.monotonic()
        local = _local_saves[0]
        if (
            self._cached is not None
            and local == self._cached[2]
            and now - self._checked_at < GENERATION_TTL_SECONDS
        ):
            return self._cached
        with self.engine.connect() as conn:
            top, count = conn.execute(
                select(func.coalesce(func.max(TemplateVersion.id), 0), func.count(TemplateVersion.id))
            ).one()
        self._cached, self._checked_at = (int(top), int(count), local), now
        return self._cached

    def source(self, name: str) -> tuple[str, int] | None:
        """The newest body saved for ``name`` and its version id, or None."""
        key = parse_name(name)
        if key is None:
            return None
        # Rows are only ever added (a rollback is a new version), so within one generation an
        # answer, found or not, stays true.
        generation = self.generation()
        if generation != self._sources_generation:
            self._sources, self._sources_generation = {}, generation
        if name not in self._sources:
            self._sources[name] = self._query_source(*key)
        return self._sources[name]

    def _query_source(self, scope: str, template: str, channel: str, locale: str) -> tuple[str, int] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(TemplateVersion.body, TemplateVersion.id)
                .where(
                    TemplateVersion.scope == scope,
                    TemplateVersion.template == template,
                    TemplateVersion.channel == channel,
                    TemplateVersion.locale == locale,
                )
                .order_by(TemplateVersion.version.desc())
                .limit(1)
            ).first()
        return (str(row[0]), int(row[1])) if row else None

    def names(self) -> list[str]:
        """Every template name that has a published version (for lint and listings)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    TemplateVersion.scope,
                    TemplateVersion.template,
                    TemplateVersion.channel,
                    TemplateVersion.locale,
                ).distinct()
            ).all()
        return [template_name(*row) for row in rows]

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()


class PublishedFirstLoader(BaseLoader):
    """The database's published version of a name if there is one, else the files' version.

    Every template it hands out, from either source, is out of date as soon as anything is
    published, so Jinja's cache never keeps serving a file after a console save (or the
    reverse after a rollback to the shipped text).
    """

    def __init__(self, database: DatabaseTemplates, files: BaseLoader) -> None:
        self.database = database
        self.files = files

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool]]:
        generation = self.database.generation()

        def unchanged() -> bool:
            return self.database.generation() == generation

        found = self.database.source(template)
        if found is not None:
            return found[0], f"{DB_PREFIX}v{found[1]}/{template}", unchanged
        source, filename, file_uptodate = self.files.get_source(environment, template)

        def uptodate() -> bool:
            return unchanged() and (file_uptodate is None or bool(file_uptodate()))

        return source, filename, uptodate

    def list_templates(self) -> list[str]:
        """Files and published versions together: what a lookup can find."""
        return sorted(set(self.files.list_templates()) | set(self.database.names()))


__all__ = ["DatabaseTemplates", "PublishedFirstLoader", "TemplateNotFound", "parse_name", "template_name"]
