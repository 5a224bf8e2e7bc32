"""``careflow import vehicles|visits`` and ``careflow visits add``: the service records care plugins read."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import click
from sqlalchemy.orm import Session

from careflow.cli import _center, _friendly_errors, err, import_, main, opened_runtime, out
from careflow.errors import ImportDataError
from careflow.importing import ImportReport
from careflow.models import Center
from careflow.points import points_rules
from careflow.records import VISIT_COLUMNS, VehicleImporter, VisitImporter, center_today, without_row_prefix
from careflow.runtime import Runtime
from careflow.service_due import VISIT_KINDS


def _run_import(
    center_code: str | None,
    work: Callable[[Runtime, Session, Center], ImportReport],
    *,
    single: bool = False,
) -> None:
    """Run an importer in one transaction; on any problem print them all and write nothing."""
    with opened_runtime() as runtime, runtime.sessions() as session:
        center = _center(session, runtime.settings, center_code)
        try:
            report = work(runtime, session, center)
        except ImportDataError as exc:
            session.rollback()
            for problem in exc.problems:
                err.print(without_row_prefix(problem) if single else problem, highlight=False, markup=False)
            what = "nothing recorded" if single else "nothing imported"
            hint = "fix it" if single else "fix them or use --skip-invalid"
            err.print(f"[red]{what}:[/] {len(exc.problems)} problem(s); {hint}")
            sys.exit(1)
        session.commit()
    for problem in report.problems:
        err.print(problem, highlight=False, markup=False)
    if single:
        out.print("visit recorded" if report.created else "visit updated")
        return
    out.print(
        f"created {report.created}, updated {report.updated}, "
        f"skipped {len(report.skipped_rows)} invalid row(s)"
    )
    if report.problems:
        sys.exit(1)


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
@_friendly_errors
def import_vehicles(file: Path, center_code: str | None, skip_invalid: bool) -> None:
    """Import or update vehicles from FILE.csv (matched by customer and plate).

    Columns: customer_external_id,plate,vin,model,purchase_date,warranty_end,interval_months,interval_km.
    customer_external_id and plate are required; a column left out leaves that field unchanged.
    """
    _run_import(
        center_code,
        lambda runtime, session, center: VehicleImporter(
            session, center, center_today(center), skip_invalid=skip_invalid
        ).run(file),
    )


@import_.command(name="visits")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_center_option
@_skip_option
@_friendly_errors
def import_visits(file: Path, center_code: str | None, skip_invalid: bool) -> None:
    """Import or update service visits from FILE.csv (matched by customer, plate, date and kind).

    Columns: customer_external_id,plate,date,mileage,amount,kind,voucher_code.
    kind is maintenance, repair, inspection or other. Visits earn points when the points
    programme is on; a voucher_code marks that voucher used (maintenance visits only).
    """
    _run_import(
        center_code,
        lambda runtime, session, center: VisitImporter(
            session,
            center,
            center_today(center),
            skip_invalid=skip_invalid,
            points=points_rules(runtime.settings),
        ).run(file),
    )


@main.group()
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
@_friendly_errors
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

    def work(runtime: Runtime, session: Session, center: Center) -> ImportReport:
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

    _run_import(center_code, work, single=True)
