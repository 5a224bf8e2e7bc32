"""Run one care plugin over one batch in a worker thread, within a time budget, on its own session.

Python cannot stop a thread that does not return, so a plugin that overruns its budget is
*abandoned*: the planner stops waiting, reports it, and discards whatever it produces later
(its session is rolled back and closed by its own thread whenever it does finish). The
session never crosses threads: the worker opens, commits or rolls back, and closes it; the
customers it loaded leave the thread detached, and the planner merges them into its own
session. On SQLite the worker reads through a second engine whose transactions start
deferred, so an abandoned plugin holds a read snapshot but never the database's write lock.
"""

from __future__ import annotations

import sys
import sysconfig
import threading
import traceback
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from careflow.care import CarePlugin, Occasion, PlanContext
from careflow.storage.db import SQLITE_BUSY_TIMEOUT_MS
from careflow.storage.models import Customer


@dataclass
class BatchOutcome:
    """What one plugin produced for one batch: its occasions, or why there are none."""

    occasions: list[Any] = field(default_factory=list)  # as yielded; the planner checks their shape
    error: str | None = None
    customer: str | None = None  # external id of the customer it was working on, when that can be told
    timed_out: bool = False
    exception: BaseException | None = None  # what it raised, for the log's traceback


def planning_sessions(engine: Engine) -> tuple[sessionmaker[Session], Callable[[], None]]:
    """Sessions for plugins to plan in during one planning pass, and how to release them after it."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        # A second engine on an in-memory SQLite database would see another, empty database.
        return sessionmaker(engine, expire_on_commit=False), lambda: None
    reader = create_engine(engine.url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    _deferred_transactions(reader)
    sessions = sessionmaker(reader, expire_on_commit=False)
    # Released by the caller after the pass, or when the pass is dropped after an exception.
    weakref.finalize(sessions, reader.dispose)
    return sessions, reader.dispose


def _deferred_transactions(engine: Engine) -> None:
    # careflow's main SQLite engine begins IMMEDIATE (it writes); a plugin mostly reads, and in
    # WAL mode a deferred reader never blocks the writers, even when it hangs.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")


@dataclass
class _Shared:
    """State the worker and the waiting planner both touch, under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False
    abandoned: bool = False
    occasions: list[Any] = field(default_factory=list)
    last_customer: str | None = None
    error: BaseException | None = None


def run_plugin_batch(
    plugin: CarePlugin,
    make_context: Callable[[Session], PlanContext],
    sessions: sessionmaker[Session],
    *,
    budget_seconds: float,
    commit: bool,
) -> BatchOutcome:
    """Ask ``plugin`` for one batch's occasions; give up after ``budget_seconds``."""
    shared = _Shared()
    done = threading.Event()
    worker = threading.Thread(
        target=_work,
        args=(plugin, make_context, sessions, shared, done, budget_seconds, commit),
        name=f"careflow-plugin-{plugin.name}",
        daemon=True,  # an abandoned plugin must not keep the process alive at exit
    )
    worker.start()
    done.wait(budget_seconds)
    with shared.lock:
        if not shared.finished:
            shared.abandoned = True
            frame = sys._current_frames().get(worker.ident or -1)
            return BatchOutcome(
                error=f"did not finish within its time budget of {budget_seconds:g} s{_where(frame)}",
                customer=_customer_in(_frames_from(frame)) or shared.last_customer,
                timed_out=True,
            )
    if shared.error is not None:
        exc = shared.error
        frames = [f for f, _ in traceback.walk_tb(exc.__traceback__)]
        return BatchOutcome(
            error=f"{type(exc).__name__}: {exc}",
            customer=_customer_in(reversed(frames)) or shared.last_customer,
            exception=exc,
        )
    return BatchOutcome(occasions=shared.occasions)


def _work(
    plugin: CarePlugin,
    make_context: Callable[[Session], PlanContext],
    sessions: sessionmaker[Session],
    shared: _Shared,
    done: threading.Event,
    budget_seconds: float,
    commit: bool,
) -> None:
    session = sessions()
    try:
        if session.get_bind().dialect.name == "postgresql":
            # The server cancels a runaway query of an abandoned plugin instead of running on.
            session.execute(text(f"SET LOCAL statement_timeout = {int(budget_seconds * 1000)}"))
        found: list[Any] = []
        for occ in plugin.occasions(make_context(session)):
            found.append(occ)
            if isinstance(occ, Occasion) and isinstance(occ.customer, Customer):
                shared.last_customer = occ.customer.external_id
        _load_what_planning_reads(found)
        with shared.lock:
            if not shared.abandoned:
                if commit:
                    session.commit()
                shared.occasions = found
                shared.finished = True
    except BaseException as exc:  # anything a plugin does is reported, never propagated
        with shared.lock:
            shared.error = exc
            shared.finished = True
    finally:
        # close() rolls back what was not committed but does not expire the loaded customers.
        session.close()
        done.set()


# What the planner reads from each occasion's customer after the plugin's session has closed.
PLANNING_READS = frozenset(
    {
        "id",
        "center_id",
        "external_id",
        "locale",
        "timezone",
        "phone",
        "email",
        "whatsapp",
        "preferred_channel",
        "is_staff",
        "center",
    }
)


def _load_what_planning_reads(found: list[Any]) -> None:
    """Load, while the plugin's session is open, what the planner reads from each customer."""
    for occ in found:
        customer = getattr(occ, "customer", None)
        if isinstance(customer, Customer):
            for name in PLANNING_READS:
                getattr(customer, name)
            _ = customer.center.locale


def _frames_from(frame: FrameType | None) -> Iterator[FrameType]:
    while frame is not None:
        yield frame
        frame = frame.f_back


def _customer_in(frames: Any) -> str | None:
    """The customer the innermost plugin frame holds in a local variable, if any."""
    for frame in frames:
        for value in list(frame.f_locals.values()):
            if isinstance(value, Customer):
                # Read the loaded value only: an attribute access could make the (possibly still
                # running) plugin thread's session load it, from this thread.
                external_id = vars(value).get("external_id")
                return None if external_id is None else str(external_id)
    return None


def _where(frame: FrameType | None) -> str:
    """Where the thread was when its budget ran out: the innermost frame outside the standard library."""
    stdlib = sysconfig.get_paths()["stdlib"]
    for candidate in _frames_from(frame):
        code = candidate.f_code
        if not code.co_filename.startswith(stdlib):
            return f" (it was at {code.co_filename}:{candidate.f_lineno} in {code.co_name})"
    return ""
