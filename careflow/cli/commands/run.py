"""``careflow run``: plan a day and deliver it (local broker) or queue it; a dry run shows the messages."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from careflow.cli.base import err, friendly_errors, opened_runtime, out, parse_now
from careflow.cli.event_records import event_record, events_by_keys
from careflow.errors import CareflowError

if TYPE_CHECKING:
    from careflow.cli.dry_run import FirstPerPlugin
    from careflow.planning.plan import PlanReport
    from careflow.policies.rows import PlannedRow
    from careflow.runtime import Runtime


def register(main: click.Group) -> None:
    """Add this module's commands to the ``careflow`` group (see careflow.cli.app)."""
    main.add_command(run)


@click.command()
@click.option(
    "--date",
    "day",
    type=click.DateTime(["%Y-%m-%d"]),
    help="Plan this local day (backfill), as if run on it at the current local time.",
)
@click.option("--now", "now_text", help="Pretend it is this instant (ISO-8601; naive means UTC).")
@click.option("--dry-run", is_flag=True, help="Show what would be sent, rendered; write and send nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per care event per line.")
@click.option(
    "--messages",
    "shown",
    default=5,
    show_default=True,
    type=click.IntRange(min=0),
    help="Dry run: show this many rendered messages per plugin (0: every one).",
)
@click.option(
    "--shards", type=click.IntRange(min=1), help="Split planning into this many shards (remote broker)."
)
@click.option("--shard-timeout", default=3600.0, show_default=True, help="Seconds to wait for all shards.")
@friendly_errors
def run(
    day: datetime | None,
    now_text: str | None,
    dry_run: bool,
    as_json: bool,
    shown: int,
    shards: int | None,
    shard_timeout: float,
) -> None:
    """Plan today's care and deliver it (local broker) or queue it (Redis/RabbitMQ)."""
    from careflow.cli.dry_run import FirstPerPlugin, print_messages, render_rows
    from careflow.cli.run_summary import carried_line, run_tables
    from careflow.planning.shards import ShardsUnfinished
    from careflow.service.care_run import run_day

    now = parse_now(now_text)
    plan_day = day.date() if day else None
    with opened_runtime(long_running=True) as runtime:
        from careflow.delivery.rate_limit import backlog_warning

        warning = backlog_warning(runtime)
        if warning:  # before anything is queued: the operator can still stop and fix it
            err.print(f"[yellow]warning:[/] {warning}", highlight=False)
        # A dry run's messages are rendered as planning finds them, never all held at once:
        # streamed (--json, --messages 0) or the first few per plugin kept for the end.
        sample = FirstPerPlugin(shown or None)
        stream = dry_run and (as_json or not shown)

        def on_preview(rows: list[PlannedRow]) -> None:
            if not stream:
                sample(rows)
            elif as_json:
                for message in render_rows(runtime, rows):
                    click.echo(json.dumps(message.as_json(), ensure_ascii=False, default=str))
            else:
                print_messages(out, render_rows(runtime, rows))

        try:
            # No progress bar while messages stream to the same screen.
            with _progress(enabled=not as_json and not stream) as on_batch:
                result = run_day(
                    runtime,
                    now=now,
                    day=plan_day,
                    dry_run=dry_run,
                    on_batch=on_batch,
                    shards=shards,
                    shard_timeout=shard_timeout,
                    on_preview=on_preview if dry_run else None,
                )
        except ShardsUnfinished as exc:
            raise CareflowError(str(exc)) from None
        report = result.report
        if result.shards:
            print_sharded_summary(result.shards, report, as_json=as_json)
        elif as_json:
            if not dry_run:
                for line in _event_json(runtime, report.keys, set(report.earlier_keys)):
                    click.echo(json.dumps(line, ensure_ascii=False, default=str))
        elif dry_run:
            _print_dry_run(runtime, report.per_plugin, sample, streamed=stream)
        else:
            for table in run_tables(runtime, report):
                out.print(table)
            carried = carried_line(runtime, result.carried)
            if carried:
                out.print(carried)
            elif result.requeued:
                out.print(f"re-queued {result.requeued} unsent event(s) from earlier runs")
            if result.released and not result.delivered_locally:
                out.print(f"released {result.released} event(s) deferred by quiet hours")
            if not result.delivered_locally:
                out.print("queued for delivery: run 'careflow worker' to send")
                warning = backlog_warning(runtime)
                if warning:
                    err.print(f"[yellow]warning:[/] {warning}", highlight=False)
        for failure in report.failures:
            who = f", customer {failure.customer}" if failure.customer else ""
            # Batch (0, 0) is the pre-planning step (segments, weather fetches), not a customer range.
            where = (
                "pre-planning"
                if failure.batch == (0, 0)
                else f"customers {failure.batch[0]}-{failure.batch[1]}"
            )
            # escape(): errors quote [plugins.x] section names, which rich would take for markup.
            err.print(
                f"[red]plugin {failure.plugin} failed[/] ({where}{who}): {escape(failure.error)}",
                highlight=False,
            )


def print_sharded_summary(shards: int, report: PlanReport, *, as_json: bool) -> None:
    """The summary of a sharded run: per-plugin outcomes (the events themselves stay in the outbox)."""
    # What this run recorded, apart from what earlier runs had (those are not sent again).
    outcomes = ("planned", "deferred", "expired", "suppressed", "already recorded")
    if as_json:
        for plugin, counts in sorted(report.per_plugin.items()):
            line = {"plugin": plugin, "shards": shards, **{k: counts[k] for k in outcomes}}
            click.echo(json.dumps(line))
        return
    table = Table(title=f"care run (planned by workers in {shards} shards)")
    table.add_column("plugin")
    for outcome in outcomes:
        table.add_column(outcome, justify="right")
    for plugin, counts in sorted(report.per_plugin.items()):
        table.add_row(plugin, *[str(counts[k]) for k in outcomes])
    if not report.per_plugin:
        table.add_row("(nothing due)", *["" for _ in outcomes])
    out.print(table)
    out.print("all shards planned; queued for delivery: 'careflow events' shows their progress")


@contextmanager
def _progress(*, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("planning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("customer ids"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("plan", total=None)

        def on_batch(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield on_batch


def _event_json(runtime: Runtime, keys: Sequence[str], earlier: set[str]) -> Iterator[dict[str, Any]]:
    """Every occasion the run found; ``already_recorded``: an earlier run recorded (and sent) it."""
    for event, customer in events_by_keys(runtime, keys):
        yield {**event_record(event, customer), "already_recorded": event.idempotency_key in earlier}


def _print_dry_run(
    runtime: Runtime, per_plugin: dict[str, Counter[str]], sample: FirstPerPlugin, *, streamed: bool
) -> None:
    """The per-plugin counts, then (unless already streamed) the first messages of each plugin."""
    from careflow.cli.dry_run import print_messages, render_rows

    table = Table(title="care run (dry run: nothing written or sent)")
    table.add_column("plugin")
    columns = ["planned", "deferred", "expired", "suppressed", "already recorded"]
    for col in columns:
        table.add_column(col, justify="right")
    for plugin in sorted(per_plugin):
        table.add_row(plugin, *[str(per_plugin[plugin][c]) for c in columns])
    if not per_plugin:
        table.add_row("(nothing due)", *["" for _ in columns])
    out.print(table)
    if streamed or not sample.kept:
        return
    out.print(f"\nwould-be messages (at most {sample.limit} per plugin):", highlight=False)
    print_messages(out, render_rows(runtime, sample.kept))
    for plugin, count in sorted(sample.left_out.items()):
        out.print(
            f"… and {count} more {plugin} message(s): 'careflow run --dry-run --messages 0' shows every one",
            highlight=False,
        )
