"""Remember how each care plugin fared in a planning run, so ``careflow plugins`` can show failures."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, delete, func, inspect, make_url, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from careflow.storage.db import make_engine
from careflow.storage.models import PluginRun

log = logging.getLogger(__name__)

# Enough to see what went wrong; the full list is in the run's own output and log.
FAILURES_KEPT = 20
KEEP_FOR = timedelta(days=90)


class Failure(Protocol):
    """What the planner reports about one plugin failure (``careflow.planning.plan.PluginFailure``)."""

    @property
    def plugin(self) -> str: ...
    @property
    def batch(self) -> tuple[int, int]: ...
    @property
    def error(self) -> str: ...
    @property
    def customer(self) -> str | None: ...


@dataclass(frozen=True)
class PluginOutcome:
    """One plugin's line in the last run."""

    plugin: str
    planned_for: datetime
    occasions: int
    failure_count: int
    failures: list[dict[str, Any]]

    @property
    def failed(self) -> bool:
        return self.failure_count > 0

    @property
    def summary(self) -> str:
        """A table cell: how the plugin fared."""
        if self.failed:
            return f"FAILED ({self.failure_count} problem(s)), {self.occasions} occasion(s)"
        return f"ok, {self.occasions} occasion(s)"


def record_run(
    sessions: sessionmaker[Session],
    *,
    plugins: Iterable[str],
    planned_for: datetime,
    batches: int,
    occasions: Counter[str],
    failures: Sequence[Failure],
) -> str:
    """Store one row per plugin of this run (and forget runs older than ``KEEP_FOR``)."""
    run_id = str(uuid.uuid4())
    by_plugin: dict[str, list[Failure]] = {}
    for failure in failures:
        by_plugin.setdefault(failure.plugin, []).append(failure)
    with sessions.begin() as session:
        for name in sorted(set(plugins) | set(by_plugin)):
            found = by_plugin.get(name, [])
            session.add(
                PluginRun(
                    run_id=run_id,
                    plugin=name,
                    planned_for=planned_for,
                    batches=batches,
                    occasions=occasions[name],
                    failure_count=len(found),
                    failures=[
                        {"batch": f"{f.batch[0]}-{f.batch[1]}", "customer": f.customer, "error": f.error}
                        for f in found[:FAILURES_KEPT]
                    ],
                )
            )
        session.execute(delete(PluginRun).where(PluginRun.planned_for < planned_for - KEEP_FOR))
    return run_id


def last_run_of(database_url: str) -> list[PluginOutcome]:
    """``last_run`` for a database URL; empty when the database is not reachable or not set up."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).exists()):
        return []  # connecting would create an empty database file as a side effect
    engine = make_engine(database_url)
    try:
        return last_run(engine)
    except OperationalError as exc:
        log.warning("cannot read the last plugin run from the database: %s", exc)
        return []
    finally:
        engine.dispose()


def last_run(engine: Engine) -> list[PluginOutcome]:
    """Each plugin's outcome in the most recent run; empty before the first run (or migration)."""
    if not inspect(engine).has_table(PluginRun.__tablename__):
        return []
    with Session(engine) as session:
        newest = session.scalar(select(func.max(PluginRun.id)))
        if newest is None:
            return []
        run_id = session.scalar(select(PluginRun.run_id).where(PluginRun.id == newest))
        rows = session.scalars(select(PluginRun).where(PluginRun.run_id == run_id).order_by(PluginRun.plugin))
        return [
            PluginOutcome(r.plugin, r.planned_for, r.occasions, r.failure_count, list(r.failures))
            for r in rows
        ]
