"""The outbox: each occasion's idempotency key, and the insert of many rows, skipping ones already recorded.

The insert takes as few round trips as the database allows.

PostgreSQL: ``COPY`` into a session-local temporary table, then one
``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING``. A multi-row VALUES statement
would do the same work, but psycopg parses every one of its ~20 placeholders per row on
the client, which costs more than the insert itself at tens of thousands of rows.
SQLite: Core ``executemany``, batched by SQLAlchemy's insertmanyvalues under SQLite's
bound-parameter limit.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, Table, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from careflow.storage.models import CareEvent

if TYPE_CHECKING:
    from careflow.care import Occasion
    from careflow.policies.rows import PlannedRow

_STAGE = "careflow_new_care_events"


def idempotency_key(plugin: str, occasion: Occasion) -> str:
    """``plugin:occasion:period:customer``: the same occasion always maps to the same key."""
    return f"{plugin}:{occasion.key}:{occasion.period}:{occasion.customer.id}"


def insert_ignoring_duplicates(session: Session, planned: Sequence[PlannedRow]) -> list[Row[Any]]:
    """Insert the rows unless their idempotency key is recorded; returns (id, key, status) of the new ones.

    Each row becomes the column values the bulk insert takes once, here.
    """
    if not planned:
        return []
    rows = [row.as_columns() for row in planned]
    table: Table = CareEvent.__table__  # type: ignore[assignment]
    if session.get_bind().dialect.name == "postgresql":
        return _copy_then_insert(session, table, rows)
    stmt = (
        sqlite.insert(table)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(table.c.id, table.c.idempotency_key, table.c.status)
    )
    return list(session.connection().execute(stmt, rows).all())


def _copy_then_insert(session: Session, table: Table, rows: list[dict[str, Any]]) -> list[Row[Any]]:
    connection = session.connection()
    full = [_with_defaults(table, row) for row in rows]
    columns = list(full[0])
    listed = ", ".join(columns)
    connection.execute(
        text(
            f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} "
            f"(LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
    )
    raw: Any = connection.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(f"COPY {_STAGE} ({listed}) FROM STDIN") as copy:
        for row in full:
            copy.write_row([_copy_value(row[c]) for c in columns])
    inserted = connection.execute(
        text(
            f"INSERT INTO {table.name} ({listed}) SELECT {listed} FROM {_STAGE} "
            "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, idempotency_key, status"
        )
    ).all()
    connection.execute(text(f"DELETE FROM {_STAGE}"))  # several batches may share a transaction
    return list(inserted)


def _with_defaults(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """COPY bypasses SQLAlchemy: fill the columns' Python-side defaults into ``row`` (made for the insert)."""
    for column in table.columns:
        if column.name in row or column.primary_key or column.default is None:
            continue
        default: Any = column.default
        row[column.name] = default.arg(None) if default.is_callable else default.arg
    return row


def _copy_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):  # psycopg would dump an Enum's name, not its value
        return value.value
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value
