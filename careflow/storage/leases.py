"""A lease row in the database: at most one holder at a time, taken over when it expires.

Compare-and-set on one row (UPDATE … WHERE holder = me OR expired), so it works the same on
SQLite and PostgreSQL without advisory locks. Holders compare against their own clocks:
keep hosts in NTP sync and the lease much longer than any clock skew.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from careflow.storage.models import SchedulerLease


def acquire(
    sessions: sessionmaker[Session], name: str, holder: str, *, ttl: timedelta, now: datetime
) -> bool:
    """Take or renew the lease ``name`` until ``now + ttl``; True if ``holder`` has it now."""
    with sessions.begin() as session:
        result = session.execute(
            update(SchedulerLease)
            .where(
                SchedulerLease.name == name,
                or_(SchedulerLease.holder == holder, SchedulerLease.expires_at < now),
            )
            .values(holder=holder, expires_at=now + ttl)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) == 1:
            return True
        # Nobody ever held it: the first insert wins, a racing one changes nothing.
        dialect: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        inserted = session.execute(
            dialect.insert(SchedulerLease)
            .values(name=name, holder=holder, expires_at=now + ttl)
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(SchedulerLease.name)  # rowcount is not reliable for upserts on every driver
        )
        return inserted.first() is not None


def release(sessions: sessionmaker[Session], name: str, holder: str, *, now: datetime) -> None:
    """Give the lease up at once (a clean stop), so a standby need not wait for it to expire."""
    with sessions.begin() as session:
        session.execute(
            update(SchedulerLease)
            .where(SchedulerLease.name == name, SchedulerLease.holder == holder)
            .values(expires_at=now)
            .execution_options(synchronize_session=False)
        )


def holder_of(sessions: sessionmaker[Session], name: str, *, now: datetime) -> str | None:
    """Who holds the lease right now (None when free or expired); for ``careflow doctor``."""
    with sessions() as session:
        lease = session.get(SchedulerLease, name)
        if lease is None or lease.expires_at < now:
            return None
        return lease.holder
