"""The pre-planning step of a run: refresh segments, then let each plugin prepare, before any batch."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from careflow.care import CarePlugin, PluginSettings, PrepareContext
from careflow.customers.segments import refresh_segments
from careflow.storage.models import Center

if TYPE_CHECKING:
    from careflow.runtime import Runtime

log = logging.getLogger(__name__)


def prepare_run(
    runtime: Runtime,
    enabled: Mapping[str, tuple[CarePlugin, PluginSettings]],
    *,
    now: datetime,
    day: date | None,
    segments: bool = True,
) -> list[tuple[str, str]]:
    """Run the once-per-run work; returns (who, problem) pairs to report. Each part commits on its own.

    ``segments=False`` keeps the segments as they are (an intraday pass of one plugin uses the
    day's, instead of classifying every customer again after each import).
    """
    problems: list[tuple[str, str]] = []
    with runtime.sessions() as session:
        center_tz = dict(session.execute(select(Center.id, Center.timezone)).all())
    try:
        if segments:
            with runtime.sessions.begin() as session:
                refresh_segments(session, runtime.settings.segments, now=now, day=day, only_stale=True)
    except Exception as exc:  # stale segments are better than no care at all
        log.exception("segment refresh failed")
        problems.append(("segments", f"segment refresh failed, yesterday's segments used: {exc}"))
    for name, (plugin, settings) in enabled.items():
        try:
            with runtime.sessions.begin() as session:
                ctx = PrepareContext(
                    session=session,
                    now=now,
                    day=day,
                    settings=settings,
                    hook=runtime.registry.pm.hook,
                    default_timezone=center_tz,
                    sessions=runtime.sessions,
                )
                problems.extend((name, problem) for problem in plugin.prepare(ctx))
        except Exception as exc:
            log.exception("care plugin %r failed to prepare", name)
            problems.append((name, f"prepare failed: {type(exc).__name__}: {exc}"))
    return problems
