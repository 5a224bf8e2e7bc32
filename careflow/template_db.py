"""Templates published in the console (the ``template_versions`` table), first in the loader chain.

Names are the same the files use: ``<template>/<channel>.<locale>.j2`` for the global
version and ``centers/<code>/<template>/<channel>.<locale>.j2`` for one center's override.
The newest version of a key is the published one.
"""

from __future__ import annotations

from collections.abc import Callable

from jinja2 import BaseLoader, Environment, TemplateNotFound
from sqlalchemy import Engine, NullPool, create_engine, func, select

from careflow.models import TemplateVersion

# A database template's "filename" (db:v<id>/<name>), so errors say which version failed.
DB_PREFIX = "db:"


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
            self.engine = create_engine(
                engine.url, poolclass=NullPool, connect_args={"timeout": 30, "check_same_thread": False}
            )
            self._owns_engine = True
        else:
            self.engine, self._owns_engine = engine, False

    def generation(self) -> tuple[int, int]:
        """Changes whenever a version is saved or removed: (highest id, row count)."""
        with self.engine.connect() as conn:
            top, count = conn.execute(
                select(func.coalesce(func.max(TemplateVersion.id), 0), func.count(TemplateVersion.id))
            ).one()
        return int(top), int(count)

    def source(self, name: str) -> tuple[str, int] | None:
        """The newest body saved for ``name`` and its version id, or None."""
        key = parse_name(name)
        if key is None:
            return None
        scope, template, channel, locale = key
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
        raise TypeError("list the files and the template_versions table separately")


__all__ = ["DatabaseTemplates", "PublishedFirstLoader", "TemplateNotFound", "parse_name", "template_name"]
