"""Writes to claimed outbox rows, fenced by the claim's attempt number; many rows in one statement."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import ColumnElement, Table, bindparam, column, func, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from careflow.storage.models import CareEvent, EventStatus

if TYPE_CHECKING:
    from careflow.runtime import Runtime

# Core statements over many rows at once (executemany) need the table, not the ORM class.
EVENTS = cast(Table, CareEvent.__table__)


def set_status(
    session: Session,
    event_id: int,
    attempt: int,
    status: EventStatus,
    *,
    also_from: frozenset[EventStatus] = frozenset(),
    **values: Any,
) -> bool:
    """Leave ``sending`` for a final (or planned) status; only the claimant of ``attempt`` can.

    The attempt number is a fencing token: a worker whose claim was recovered and handed to
    another worker (a new attempt) can no longer overwrite that worker's outcome.
    """
    result = session.execute(
        update(CareEvent)
        .where(
            CareEvent.id == event_id,
            CareEvent.status.in_({EventStatus.SENDING, *also_from}),
            CareEvent.attempts == attempt,
        )
        .values(status=status, **values)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


def finish(runtime: Runtime, event_id: int, attempt: int, status: EventStatus, **values: Any) -> bool:
    with runtime.sessions.begin() as session:
        return set_status(session, event_id, attempt, status, **values)


def still_held(given: Mapping[str, Any]) -> tuple[ColumnElement[bool], ...]:
    """Each row's event, still claimed (``sending``) by that row's attempt."""
    table = EVENTS
    return (
        table.c.id == given["event_id"],
        table.c.attempts == given["attempt"],
        table.c.status == EventStatus.SENDING,
    )


def update_each(
    session: Session,
    types: Mapping[str, TypeEngine[Any]],
    rows: Sequence[tuple[Any, ...]],
    *,
    where: Callable[[Mapping[str, Any]], Sequence[ColumnElement[bool]]],
    values: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    returning: Sequence[ColumnElement[Any]] = (),
) -> list[Any] | None:
    """Update care events, each row of ``rows`` (named and typed by ``types``) with its own values.

    ``where`` and ``values`` build the statement from the rows' columns. PostgreSQL: one
    ``UPDATE … FROM unnest(…) AS given(…)`` for all rows, one typed array per column, with
    ``returning``'s rows returned. Its text is the same whatever the rows, so SQLAlchemy
    compiles it once and PostgreSQL prepares it once per connection (a ``VALUES`` list would
    be compiled, sent and planned anew for every batch). SQLite, which has no arrays: the
    statement once per row (executemany, in-process), returning None.
    """
    table = EVENTS
    if session.get_bind().dialect.name == "postgresql":
        arrays = [
            bindparam(f"given_{name}", [row[i] for row in rows], type_=ARRAY(kind))
            for i, (name, kind) in enumerate(types.items())
        ]
        given = (
            func.unnest(*arrays)
            .table_valued(*(column(name, kind) for name, kind in types.items()))
            .render_derived(name="given")
        )
        columns: Mapping[str, Any] = {name: given.c[name] for name in types}
        statement = update(table).where(*where(columns)).values(**values(columns))
        if returning:
            return list(session.execute(statement.returning(*returning)))
        session.execute(statement)
        return None
    # Parameter names unlike any column's: SQLAlchemy reserves those for SET.
    params: Mapping[str, Any] = {name: bindparam(f"row_{name}") for name in types}
    session.execute(
        update(table).where(*where(params)).values(**values(params)),
        [{f"row_{name}": value for name, value in zip(types, row, strict=True)} for row in rows],
    )
    return None
