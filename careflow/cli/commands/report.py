"""``careflow report …``: figures for center managers (satisfaction surveys first)."""

from __future__ import annotations

import json

import click
from rich.table import Table

from careflow.cli.base import friendly_errors, opened_runtime, out
from careflow.customers.survey_report import survey_figures
from careflow.errors import ConfigError


def register(main: click.Group) -> None:
    """Add this module's commands to the ``careflow`` group (see careflow.cli.app)."""
    main.add_command(report)


@click.group()
def report() -> None:
    """Reports for center managers."""


@report.command(name="surveys")
@click.option("--center", "center_code", help="Only this center (code from careflow.toml).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per center and month.")
@friendly_errors
def surveys(center_code: str | None, as_json: bool) -> None:
    """CSAT (share of 4-5) and NPS-style score (5s minus 1-3s) per center and month."""
    with opened_runtime() as runtime:
        if center_code is not None and center_code not in runtime.settings.centers:
            known = ", ".join(runtime.settings.centers)
            raise ConfigError(f"--center {center_code}: no such center (configured: {known})")
        with runtime.sessions() as session:
            figures = survey_figures(session, center_code)
    if as_json:
        for f in figures:
            record = {
                "center": f.center,
                "month": f.month,
                "responses": f.responses,
                "average": round(f.average, 2),
                "csat": round(f.csat, 1),
                "nps": round(f.nps, 1),
                "promoters": f.promoters,
                "passives": f.passives,
                "detractors": f.detractors,
            }
            out.print(json.dumps(record, ensure_ascii=False), highlight=False, soft_wrap=True)
        return
    if not figures:
        out.print("no survey responses yet")
        return
    table = Table(title="satisfaction surveys (CSAT = share of 4-5; NPS-style = % of 5s - % of 1-3s)")
    for col in ("center", "month", "responses", "average", "CSAT", "NPS", "5s", "4s", "1-3s"):
        table.add_column(col, justify="left" if col in ("center", "month") else "right")
    for f in figures:
        table.add_row(
            f.center,
            f.month,
            str(f.responses),
            f"{f.average:.2f}",
            f"{f.csat:.1f}%",
            f"{f.nps:+.1f}",
            str(f.promoters),
            str(f.passives),
            str(f.detractors),
        )
    out.print(table)
