"""``careflow import customers|vehicles|visits`` and ``careflow visits add``: records plugins read."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from sqlalchemy.orm import Session

from careflow.cli.base import center_named, err, friendly_errors, opened_runtime, out
from careflow.customers.import_customers import CustomerImporter, ImportReport, Progress
from careflow.customers.import_records import (
    VISIT_COLUMNS,
    VehicleImporter,
    VisitImporter,
    center_today,
    without_row_prefix,
)
from careflow.customers.points import points_rules
from careflow.customers.service_due import VISIT_KINDS
from careflow.errors import ImportDataError
from careflow.runtime import Runtime
from careflow.storage.models import Center


def register(main: click.Group) -> None:
    """Add this module's commands to the ``careflow`` group (see careflow.cli.app)."""
    main.add_command(import_)
    main.add_command(visits)


@click.group(name="import")
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
@friendly_errors
def import_customers(file: Path, center_code: str | None, skip_invalid: bool, encoding: str | None) -> None:
    """Import or update customers from FILE.csv (matched by external_id).

    Columns: external_id,name,phone,email,birthday,locale,timezone,city,sms_consent,email_consent,
    whatsapp,whatsapp_consent,preferred_channel (sms, whatsapp or email).
    Only external_id and name are required; a column left out leaves that field unchanged.
    """

    run_import(
        center_code,
        lambda runtime, session, center, progress: CustomerImporter(
            session, center, skip_invalid=skip_invalid, progress=progress
        ).run(file, encoding),
    )


def run_import(
    center_code: str | None,
    work: Callable[[Runtime, Session, Center, Progress | None], ImportReport],
    *,
    single: bool = False,
) -> None:
    """Run an importer in one transaction; on any problem print them all and write nothing."""
    with opened_runtime() as runtime, runtime.sessions() as session:
        center = center_named(session, runtime.settings, center_code)
        started = time.perf_counter()
        try:
            with _progress(enabled=not single) as progress:
                report = work(runtime, session, center, progress)
        except ImportDataError as exc:
            session.rollback()
            for problem in exc.problems:
                err.print(without_row_prefix(problem) if single else problem, highlight=False, markup=False)
            what = "nothing recorded" if single else "nothing imported"
            hint = "fix it" if single else "fix them or use --skip-invalid"
            err.print(f"[red]{what}:[/] {len(exc.problems)} problem(s); {hint}")
            sys.exit(1)
        session.commit()
        seconds = time.perf_counter() - started
    if report.read_as:
        out.print(report.read_as, highlight=False)
    for problem in report.problems:
        err.print(problem, highlight=False, markup=False)
    for note in report.kept_withdrawn:
        err.print(note, highlight=False, markup=False)
    if single:
        if report.created or report.updated:
            out.print("visit recorded" if report.created else "visit updated")
        else:
            out.print("visit unchanged (already recorded)")
        return
    out.print(
        f"created {report.created}, updated {report.updated}, unchanged {report.unchanged}, "
        f"skipped {len(report.skipped_rows)} invalid row(s)"
        + (f"; {len(report.kept_withdrawn)} consent(s) kept withdrawn" if report.kept_withdrawn else "")
    )
    out.print(rate(report.written, seconds), highlight=False)
    if report.problems:
        sys.exit(1)


def rate(rows: int, seconds: float) -> str:
    """``imported 100,000 rows in 12.3 s, 8,130 rows/s``."""
    per_second = f", {rows / seconds:,.0f} rows/s" if rows and seconds > 0 else ""
    return f"imported {rows:,} row{'s' if rows != 1 else ''} in {seconds:.1f} s{per_second}"


@contextmanager
def _progress(*, enabled: bool) -> Iterator[Progress | None]:
    """A progress bar of rows checked, then written; only on a terminal (nothing in a pipe or file)."""
    if not (enabled and out.is_terminal):
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"))
    with RichProgress(*columns, TimeElapsedColumn(), console=out, transient=True) as bar:
        task = bar.add_task("reading", total=None)

        def update(step: str, done: int, total: int) -> None:
            bar.update(task, description=step, completed=done, total=total)

        yield update


_center_option = click.option(
    "--center", "center_code", help="Center code from careflow.toml (default: the first)."
)
_skip_option = click.option(
    "--skip-invalid", is_flag=True, help="Import the valid rows and report the invalid ones."
)


@import_.command(name="vehicles")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_center_option
@_skip_option
@encoding_option
@friendly_errors
def import_vehicles(file: Path, center_code: str | None, skip_invalid: bool, encoding: str | None) -> None:
    """Import or update vehicles from FILE.csv (matched by customer and plate).

    Columns: customer_external_id,plate,vin,model,purchase_date,warranty_end,interval_months,interval_km.
    customer_external_id and plate are required; a column left out leaves that field unchanged.
    """
    run_import(
        center_code,
        lambda runtime, session, center, progress: VehicleImporter(
            session, center, center_today(center), skip_invalid=skip_invalid, progress=progress
        ).run(file, encoding),
    )


@import_.command(name="visits")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_center_option
@_skip_option
@encoding_option
@friendly_errors
def import_visits(file: Path, center_code: str | None, skip_invalid: bool, encoding: str | None) -> None:
    """Import or update service visits from FILE.csv (matched by customer, plate, date and kind).

    Columns: customer_external_id,plate,date,mileage,amount,kind,voucher_code.
    kind is maintenance, repair, inspection or other. Visits earn points when the points
    programme is on; a voucher_code marks that voucher used (maintenance visits only).
    """
    run_import(
        center_code,
        lambda runtime, session, center, progress: VisitImporter(
            session,
            center,
            center_today(center),
            skip_invalid=skip_invalid,
            progress=progress,
            points=points_rules(runtime.settings),
        ).run(file, encoding),
    )


@click.group()
def visits() -> None:
    """Record service visits one at a time."""


@visits.command(name="add")
@click.option("--customer", required=True, help="The customer's external_id.")
@click.option("--plate", required=True, help="The vehicle's plate (import the vehicle first).")
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), help="Visit date (default: today).")
@click.option("--kind", type=click.Choice(VISIT_KINDS), default="maintenance", show_default=True)
@click.option("--mileage", help="Odometer reading in km.")
@click.option("--amount", help="Amount spent, e.g. 680.50 (earns points).")
@click.option("--voucher", "voucher_code", help="A points voucher used at this (maintenance) visit.")
@_center_option
@friendly_errors
def visits_add(
    customer: str,
    plate: str,
    day: datetime | None,
    kind: str,
    mileage: str | None,
    amount: str | None,
    voucher_code: str | None,
    center_code: str | None,
) -> None:
    """Record one visit (or update it: same customer, plate, date and kind); same checks as the import."""

    def work(runtime: Runtime, session: Session, center: Center, progress: Progress | None) -> ImportReport:
        today = center_today(center)
        row = {
            "customer_external_id": customer,
            "plate": plate,
            "date": (day.date() if day else today).isoformat(),
            "mileage": mileage or "",
            "amount": amount or "",
            "kind": kind,
            "voucher_code": voucher_code or "",
        }
        # Only the fields given change an existing visit, as with a CSV that leaves a column out.
        header = [
            c for c in VISIT_COLUMNS if row[c] or c in ("customer_external_id", "plate", "date", "kind")
        ]
        importer = VisitImporter(session, center, today, points=points_rules(runtime.settings))
        return importer.run_rows(header, [{c: row[c] for c in header}])

    run_import(center_code, work, single=True)
