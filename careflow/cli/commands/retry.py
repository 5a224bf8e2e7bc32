"""``careflow retry``: re-queue failed care events after the cause is fixed."""

from __future__ import annotations

from datetime import datetime

import click
from sqlalchemy import select

from careflow.cli.base import friendly_errors, opened_runtime, out
from careflow.errors import CareflowError
from careflow.storage.models import CareEvent, EventStatus


def register(main: click.Group) -> None:
    """Add this module's commands to the ``careflow`` group (see careflow.cli.app)."""
    main.add_command(retry)


@click.command()
@click.argument("ids", nargs=-1, type=int)
@click.option(
    "--status",
    type=click.Choice([EventStatus.FAILED.value]),
    help="Retry every event in this status (only failed events can be retried).",
)
@click.option("--plugin", help="Only events of this care plugin.")
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), help="Only events due on this day.")
@friendly_errors
def retry(ids: tuple[int, ...], status: str | None, plugin: str | None, day: datetime | None) -> None:
    """Re-queue failed events: by IDS, or all failed ones matching --status/--plugin/--date.

    Each is reset with fresh attempts and goes through the same timing policies as planning:
    in quiet hours it is deferred to the sending window, past the frequency cap suppressed,
    past its expiry expired (the reason recorded); the rest are queued (delivered at once with
    the local broker). An event whose last attempt may have reached the provider is looked up
    there before anything is sent again, so a retry never sends a message twice.
    """
    if not (ids or status or plugin or day):
        raise CareflowError("say which events: give IDS, or --status failed (optionally --plugin/--date)")
    from careflow.service.care_run import queue_events, retry_events

    with opened_runtime() as runtime:
        with runtime.sessions() as session:
            query = select(CareEvent.id, CareEvent.status).where(CareEvent.status == EventStatus.FAILED)
            if ids:
                query = select(CareEvent.id, CareEvent.status).where(CareEvent.id.in_(ids))
            if plugin:
                query = query.where(CareEvent.plugin == plugin)
            if day:
                query = query.where(CareEvent.due_date == day.date())
            found: dict[int, str] = {row.id: row.status for row in session.execute(query)}
        for event_id in ids:
            if event_id not in found:
                raise CareflowError(f"event {event_id} does not exist (see 'careflow events')")
            if found[event_id] != EventStatus.FAILED:
                raise CareflowError(
                    f"event {event_id} is {found[event_id]}, not failed: only failed events can be retried"
                )
        chosen = sorted(found)
        if not chosen:
            out.print("no failed events match; nothing to retry")
            return
        retried = retry_events(runtime, chosen)
        if not retried.planned:
            out.print(f"retried {retried.reset} event(s): {retried.summary()}")
            return
        delivered = queue_events(runtime, retried.planned)
        if delivered:
            with runtime.sessions() as session:
                after = (
                    session.execute(select(CareEvent.status).where(CareEvent.id.in_(chosen))).scalars().all()
                )
            summary = ", ".join(f"{after.count(s)} {s}" for s in sorted(set(after)))
            out.print(f"retried {retried.reset} event(s): {summary}")
        else:
            out.print(f"retried {retried.reset} event(s): {retried.summary()}; run 'careflow worker' to send")
