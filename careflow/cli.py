"""The ``careflow`` command."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select

from careflow.config import CONFIG_ENV, DEFAULT_FILE, Settings, load_settings
from careflow.errors import CareflowError
from careflow.runtime import Runtime
from careflow.storage.models import CareEvent, Center, Customer, EventStatus, utcnow
from careflow.terminal import OutputConsole
from careflow.version import __version__

if TYPE_CHECKING:
    from careflow.dry_run import FirstPerPlugin
    from careflow.planning.plan import PlanReport

# soft_wrap: a problem line stays one line when output goes to a file or a pipe; tables there
# keep their full width too (careflow.terminal).
out = OutputConsole(soft_wrap=True)
err = OutputConsole(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def _friendly_errors(fn: F) -> F:
    """careflow's own errors are printed as a clear message and exit status 1, without a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CareflowError as exc:
            # escape(): messages name config sections like [plugins.x], which are not markup.
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


@contextmanager
def opened_runtime(*, migrate_schema: bool = False, long_running: bool = False) -> Iterator[Runtime]:
    """The runtime of one command; ``long_running`` commands also settle the heap (careflow.heap)."""
    runtime = Runtime.build(load_settings(), migrate_schema=migrate_schema)
    if long_running:
        from careflow.heap import settle_after_startup

        settle_after_startup()
    for failure in runtime.registry.failures:  # e.g. a plugin made for another careflow version
        err.print(f"[yellow]warning: plugin {failure.name} is not used:[/] {failure.error}", highlight=False)
    try:
        yield runtime
    finally:
        runtime.close()


def _parse_now(value: str | None) -> datetime:
    if value is None:
        return utcnow()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not ISO-8601, e.g. 2026-03-01T09:00:00+08:00") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="careflow")
@click.option("-v", "--verbose", is_flag=True, help="Log what careflow does (to stderr).")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object per line for log aggregators (numbers and addresses masked).",
)
def main(verbose: bool, log_format: str) -> None:
    """careflow: caring for service-center customers between visits.

    Configuration comes from ./careflow.toml (or the file named by CAREFLOW_CONFIG) and
    CAREFLOW_<SECTION>__<KEY> environment variables.
    """
    from careflow.logs import configure

    configure(logging.INFO if verbose else logging.WARNING, log_format)
    # The Twilio SDK logs every request's headers at INFO: noise that would drown careflow's own.
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)


INIT_TEMPLATE = """\
# careflow configuration. Environment variables override single keys:
# CAREFLOW_<SECTION>__<KEY>, e.g. CAREFLOW_TWILIO__AUTH_TOKEN. Keep secrets there.

[database]
url = "sqlite:///careflow.db"          # or postgresql+psycopg://user@host/dbname

[broker]
url = "local"                          # in-process; or redis://127.0.0.1:6379/0, amqp://guest:guest@127.0.0.1:5672/
queue = "careflow"
worker_threads = 4

[channels.sms]
provider = "console"                   # prints messages; "twilio" sends them

[channels.email]
provider = "console"                   # prints e-mails; "smtp" sends them with the [email] settings below
# enabled = false                      # switch e-mail off; care falls back to the next channel

[email]
# SMTP relay for provider = "smtp". The password is a secret: CAREFLOW_EMAIL__PASSWORD, never here.
# host = "smtp.example.com"            # or CAREFLOW_EMAIL__HOST
# port = 587
# security = "starttls"                # "starttls" (port 587), "tls" (implicit TLS, port 465) or "none"
# username = "careflow"                # or CAREFLOW_EMAIL__USERNAME
# from_address = "care@example.com"    # sender of centers without their own email_from
# With "smtp", [web] public_url and CAREFLOW_WEB__SECRET_KEY are required too (unsubscribe links).

[twilio]
# account_sid = "AC..."                # or CAREFLOW_TWILIO__ACCOUNT_SID
# auth_token = "..."                   # or CAREFLOW_TWILIO__AUTH_TOKEN (never commit it)
# from_number = "+8613800000000"       # or messaging_service_sid = "MG..."
# base_url = "https://api.twilio.com"  # any Twilio-compatible API

[centers.main]
name = "{center_name}"
timezone = "{timezone}"
locale = "{locale}"
{country_line}
help_text = "Reply STOP to opt out. Call us on 400-000-0000."
send_from = "09:00"                    # quiet hours: send only 09:00-20:00, customer's local time
send_until = "20:00"
frequency_cap = 2                      # at most 2 care messages per customer per 7 days
frequency_window_days = 7
stop_withdraws = "all"                 # STOP withdraws service and marketing; or "marketing"
plan_at = "08:00"                      # local time 'careflow scheduler' plans this center's day

[web]
# careflow serve: Twilio webhooks. public_url is the address Twilio calls (signatures use it).
# public_url = "https://care.example.com"

[delivery]
max_attempts = 5
min_backoff_ms = 1000
max_backoff_ms = 300000

[plugins.birthday]
enabled = true
"""


def _country_line(country: str | None, timezone: str, locale: str) -> tuple[str, str | None]:
    """The template's ``country`` line, and a note saying where a derived country came from."""
    from careflow.countries import center_country, check_country, country_of_timezone

    comment = "# phone numbers written without + are read in this country (ISO 3166)"
    if country is not None:
        try:
            return f'country = "{check_country(country)}"'.ljust(39) + comment, None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--country'") from None
    derived = center_country(None, timezone, locale)
    if derived is None:
        return '# country = "CN"'.ljust(39) + comment + "; unset: from the locale", None
    source = f"the time zone {timezone}" if country_of_timezone(timezone) else f"the locale {locale}"
    note = f"country {derived} (from {source}): numbers without + are read there; --country to change it"
    return f'country = "{derived}"'.ljust(39) + comment, note


@main.command()
@click.option("--center-name", default="Main Service Center", show_default=True)
@click.option("--timezone", default="Asia/Shanghai", show_default=True)
@click.option("--locale", default="zh_CN", show_default=True)
@click.option(
    "--country",
    help="ISO 3166 code (CN, GB) phone numbers without + are read in [default: the time zone's].",
)
@click.option("--force", is_flag=True, help="Overwrite an existing careflow.toml.")
@_friendly_errors
def init(center_name: str, timezone: str, locale: str, country: str | None, force: bool) -> None:
    """Write a commented careflow.toml (here, or at CAREFLOW_CONFIG) and create the migrated database."""
    path = Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else Path.cwd() / DEFAULT_FILE
    if path.exists() and not force:
        err.print(f"{path} exists; keeping it (use --force to overwrite). Migrating its database.")
    else:
        country_line, note = _country_line(country, timezone, locale)
        path.write_text(
            INIT_TEMPLATE.format(
                center_name=center_name, timezone=timezone, locale=locale, country_line=country_line
            ),
            "utf-8",
        )
        out.print(f"wrote {path}")
        if note:
            out.print(note, highlight=False)
    with opened_runtime(migrate_schema=True) as runtime:
        url = runtime.engine.url.render_as_string(hide_password=True)
        out.print(f"database ready: {url}")


@main.group(name="import")
def import_() -> None:
    """Import records from CSV files."""


encoding_option = click.option(
    "--encoding",
    help="The file's text encoding, e.g. gb18030, utf-16, cp1252 [default: detected, and said which].",
)


@import_.command(name="customers")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--center", "center_code", help="Center code from careflow.toml (default: the first one).")
@click.option("--skip-invalid", is_flag=True, help="Import the valid rows and report the invalid ones.")
@encoding_option
@_friendly_errors
def import_customers(file: Path, center_code: str | None, skip_invalid: bool, encoding: str | None) -> None:
    """Import or update customers from FILE.csv (matched by external_id).

    Columns: external_id,name,phone,email,birthday,locale,timezone,city,sms_consent,email_consent,
    whatsapp,whatsapp_consent,preferred_channel (sms, whatsapp or email).
    Only external_id and name are required; a column left out leaves that field unchanged.
    """
    from careflow.commands.records import run_import
    from careflow.customers.import_customers import CustomerImporter

    run_import(
        center_code,
        lambda runtime, session, center, progress: CustomerImporter(
            session, center, skip_invalid=skip_invalid, progress=progress
        ).run(file, encoding),
    )


def _center(session: Any, settings: Settings, code: str | None) -> Center:
    code = code or settings.default_center
    center = session.scalar(select(Center).where(Center.code == code))
    if center is None:
        known = ", ".join(settings.centers)
        raise CareflowError(f"unknown center {code!r}; configured centers: {known}")
    return center  # type: ignore[no-any-return]


def customer_by_external_id(session: Any, center: Center, external_id: str) -> Customer:
    """The card with ``external_id`` in ``center``, or an error that names both."""
    customer = session.scalar(
        select(Customer).where(Customer.center_id == center.id, Customer.external_id == external_id)
    )
    if customer is None:
        raise CareflowError(f"no customer {external_id!r} in center {center.code}")
    return customer  # type: ignore[no-any-return]


@main.command()
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
@_friendly_errors
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
    from careflow.dry_run import FirstPerPlugin, print_messages, render_rows
    from careflow.planning.shards import ShardsUnfinished
    from careflow.run_summary import carried_line, run_tables
    from careflow.service.care_run import run_day

    now = _parse_now(now_text)
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

        def on_preview(rows: list[dict[str, Any]]) -> None:
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


def _events_by_keys(runtime: Runtime, keys: Sequence[str]) -> Iterator[tuple[CareEvent, Customer]]:
    """The events with these keys, read a thousand at a time (a big run is never all in memory)."""
    with runtime.sessions() as session:
        for start in range(0, len(keys), 1_000):
            chunk = keys[start : start + 1_000]
            rows = session.execute(
                select(CareEvent, Customer)
                .join(Customer, Customer.id == CareEvent.customer_id)
                .where(CareEvent.idempotency_key.in_(chunk))
                .order_by(CareEvent.id)
            )
            yield from rows
            session.expunge_all()


def event_record(event: CareEvent, customer: Customer) -> dict[str, Any]:
    return {
        "id": event.id,
        "key": event.idempotency_key,
        "plugin": event.plugin,
        "customer": customer.external_id,
        "name": customer.name,
        "due_date": event.due_date.isoformat(),
        "channel": event.channel,
        "to": event.recipient,
        "channel_reason": event.channel_reason,
        "body": event.body,
        "status": event.status,
        "reason": event.status_reason,
        "error_code": event.error_code,
        "attempts": event.attempts,
        "provider_message_id": event.provider_message_id,
    }


def _event_json(runtime: Runtime, keys: Sequence[str], earlier: set[str]) -> Iterator[dict[str, Any]]:
    """Every occasion the run found; ``already_recorded``: an earlier run recorded (and sent) it."""
    for event, customer in _events_by_keys(runtime, keys):
        yield {**event_record(event, customer), "already_recorded": event.idempotency_key in earlier}


def _print_dry_run(
    runtime: Runtime, per_plugin: dict[str, Counter[str]], sample: FirstPerPlugin, *, streamed: bool
) -> None:
    """The per-plugin counts, then (unless already streamed) the first messages of each plugin."""
    from careflow.dry_run import print_messages, render_rows

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


@main.command()
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), help="Only events due on this day.")
@click.option(
    "--status", type=click.Choice([s.value for s in EventStatus]), help="Only events in this status."
)
@click.option("--plugin", help="Only events of this care plugin.")
@click.option("--limit", default=200, show_default=True, help="Show at most this many (0: all).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event per line.")
@_friendly_errors
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


@main.command()
@click.option("--threads", type=int, help="Worker threads (default: [broker] worker_threads).")
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics on this port (0.0.0.0).")
@_friendly_errors
def worker(threads: int | None, metrics_port: int | None) -> None:
    """Deliver queued care events from the Redis or RabbitMQ broker until stopped (SIGTERM/Ctrl-C)."""
    from dramatiq import Worker

    from careflow.delivery.actors import build_actors
    from careflow.delivery.broker import LOCAL, make_broker

    with opened_runtime(long_running=True) as runtime:
        if runtime.settings.broker.url == LOCAL:
            raise CareflowError(
                "[broker] url is 'local': 'careflow run' delivers in-process; "
                "set a redis:// or amqp:// URL to run separate workers"
            )
        broker = make_broker(runtime.settings.broker.url, runtime.settings.broker)
        build_actors(broker, runtime)
        stop_metrics = None
        if metrics_port is not None:
            from careflow.metrics import enable_worker_metrics

            stop_metrics = enable_worker_metrics(broker, metrics_port)
            err.print(f"careflow worker: metrics on http://0.0.0.0:{metrics_port}/metrics")
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        worker_ = Worker(broker, worker_threads=threads or runtime.settings.broker.worker_threads)
        worker_.start()
        thread_count = threads or runtime.settings.broker.worker_threads
        err.print(f"careflow worker: {thread_count} threads consuming {runtime.settings.broker.queue!r}")
        try:
            stop.wait()
        finally:
            err.print("careflow worker: stopping (finishing the messages in hand)")
            worker_.stop()
            broker.close()
            if stop_metrics is not None:
                stop_metrics()


@main.command()
@_friendly_errors
def plugins() -> None:
    """List care plugins and channel providers, where they come from, and whether each is enabled."""
    from careflow.care import priority_of
    from careflow.planning.run_records import last_run_of
    from careflow.plugin_manager import load_plugins

    settings = load_settings()
    registry = load_plugins()
    checked = registry.plugin_settings(settings)
    last = {o.plugin: o for o in last_run_of(settings.database.url)}
    table = Table(title="care plugins")
    for col in ("name", "enabled", "priority", "purpose", "package", "hooks", "last run", "description"):
        table.add_column(col, overflow="fold")
    # The priority in force: careflow.toml's ``priority`` over the plugin's default.
    for name, plugin in sorted(
        registry.care_plugins.items(), key=lambda kv: -priority_of(kv[1], checked[kv[0]])
    ):
        source = registry.sources[name]
        impl = registry.pm.get_plugin(source)
        hooks = sorted(h.name for h in registry.pm.get_hookcallers(impl) or []) if impl is not None else []
        table.add_row(
            name,
            "yes" if checked[name].enabled else "no",
            str(priority_of(plugin, checked[name])),
            str(plugin.purpose),
            registry.distributions.get(source, source),
            ", ".join(hooks),
            last[name].summary if name in last else "-",
            plugin.description,
        )
    out.print(table)
    out.print(_settings_table(registry.care_plugins, checked))
    providers = Table(title="channel providers")
    providers.add_column("provider")
    providers.add_column("channels")
    providers.add_column("used for")
    for name, provider in sorted(registry.providers.items()):
        used = [ch for ch, cfg in settings.channels.items() if cfg.provider == name]
        providers.add_row(name, ", ".join(sorted(provider.channels)), ", ".join(used) or "-")
    out.print(providers)
    for failure in registry.failures:
        err.print(f"[red]plugin {failure.name} failed to load:[/] {failure.error}", highlight=False)
    for outcome in last.values():
        for problem in outcome.failures:
            who = f", customer {problem['customer']}" if problem.get("customer") else ""
            out.print(
                f"[red]plugin {outcome.plugin} failed in the last run[/] "
                f"(planned for {outcome.planned_for:%Y-%m-%d %H:%M} UTC, customers {problem['batch']}{who}): "
                f"{problem['error']}",
                highlight=False,
            )
        if outcome.failure_count > len(outcome.failures):
            more = outcome.failure_count - len(outcome.failures)
            out.print(f"plugin {outcome.plugin}: {more} more failure(s) in the last run; see its log")


def _settings_table(care_plugins: dict[str, Any], checked: dict[str, Any]) -> Table:
    """Each care plugin's effective settings (defaults included), as ``[plugins.<name>]`` keys."""
    table = Table(title=escape("care plugin settings ([plugins.<name>] in careflow.toml)"))
    for col in ("plugin", "key", "value", "meaning"):
        table.add_column(col, overflow="fold")
    for name in sorted(care_plugins):
        fields = type(checked[name]).model_fields
        for key, value in checked[name].model_dump(mode="json", exclude={"enabled"}).items():
            meaning = fields[key].description or ""
            table.add_row(name, key, json.dumps(value, ensure_ascii=False), meaning)
    return table


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default="careflow-demo",
    show_default=True,
    help="Workspace to create (reused if it exists).",
)
@click.option("--customers", default=300, show_default=True, help="How many sample customers.")
@click.option("--now", "now_text", help="Pretend it is this instant (ISO-8601).")
@_friendly_errors
def demo(directory: Path, customers: int, now_text: str | None) -> None:
    """Create a demo workspace with sample customers and run today's care on the embedded default."""
    from careflow.demo import run_demo

    run_demo(directory, customers=customers, now=_parse_now(now_text) if now_text else None, out=out, err=err)


from careflow.commands import load_commands  # noqa: E402  (modules register onto ``main``)

load_commands()

if __name__ == "__main__":  # pragma: no cover
    # Under ``python -m careflow.cli`` this module is ``__main__``, while command modules
    # registered onto ``careflow.cli.main``, a second copy: run that one, which has them all.
    from careflow.cli import main as main_with_commands

    main_with_commands()
