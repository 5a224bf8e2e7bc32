"""Once-a-day jobs recorded in ``scheduler_runs`` (unique job + day), so a done day is not redone.

Planning a center's day (``plan:<center>``) and computing its segments (``segments:<center>``)
both use it; the row's holder says who did it.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from careflow.storage.models import SchedulerRun, utcnow


def is_done(session: Session, job: str, day: date) -> bool:
    return (
        session.scalar(select(SchedulerRun.id).where(SchedulerRun.job == job, SchedulerRun.day == day))
        is not None
    )


def record_done(session: Session, job: str, day: date, holder: str) -> None:
    """Note ``job`` done for ``day``; another process noting it too at the same time is fine."""
    make = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        make(SchedulerRun)
        .values(job=job, day=day, holder=holder, finished_at=utcnow())
        .on_conflict_do_nothing(index_elements=["job", "day"])
    )
