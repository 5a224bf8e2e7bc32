"""``careflow events``: recorded care events, newest first, with why each failed or was suppressed."""

from __future__ import annotations

import json
from datetime import datetime

import click
from rich.table import Table
from sqlalchemy import select

from careflow.cli.base import friendly_errors, opened_runtime, out
from careflow.cli.event_records import event_record
from careflow.storage.models import CareEvent, Customer, EventStatus


def register(main: click.Group) -> None:
    """Add this module's commands to the ``careflow`` group (see careflow.cli.app)."""
    main.add_command(events)


@click.command()
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), help="Only events due on this day.")
@click.option(
    "--status", type=click.Choice([s.value for s in EventStatus]), help="Only events in this status."
)
@click.option("--plugin", help="Only events of this care plugin.")
@click.option("--limit", default=200, show_default=True, help="Show at most this many (0: all).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event per line.")
@friendly_errors
def events(day: datetime | None, status: str | None, plugin: str | None, limit: int, as_json: bool) -> None:
    """List recorded care events, newest first, with why each failed or was suppressed."""
    with opened_runtime() as runtime, runtime.sessions() as session:
        query = select(CareEvent, Customer).join(Customer, Customer.id == CareEvent.customer_id)
        if day:
            query = query.where(CareEvent.due_date == day.date())
        if status:
            query = query.where(CareEvent.status == status)
        if plugin:
            query = query.where(CareEvent.plugin == plugin)
        query = query.order_by(CareEvent.id.desc())
        if limit:
            query = query.limit(limit)
        rows = session.execute(query).all()
        if as_json:
            for event, customer in rows:
                click.echo(json.dumps(event_record(event, customer), ensure_ascii=False))
            return
        table = Table(title=f"{len(rows)} care event(s)")
        for col in ("id", "due", "plugin", "customer", "channel", "to", "status", "why"):
            table.add_column(col, overflow="fold")
        for event, customer in rows:
            why = event.status_reason or ""
            if event.error_code and event.error_code not in why:
                why = f"[{event.error_code}] {why}"
            table.add_row(
                str(event.id),
                event.due_date.isoformat(),
                event.plugin,
                customer.external_id,
                event.channel or "-",
                event.recipient or "-",
                event.status,
                why,
            )
        out.print(table)
