"""``careflow templates lint``: every template checked before a customer sees it."""

from __future__ import annotations

import json
import sys

import click
from rich.markup import escape
from rich.table import Table

from careflow.cli.base import friendly_errors, opened_runtime, out


def register(main: click.Group) -> None:
    """Add this module's commands to the ``careflow`` group (see careflow.cli.app)."""
    main.add_command(templates)


@click.group()
def templates() -> None:
    """Check message templates."""


@templates.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON finding per line.")
@friendly_errors
def lint(as_json: bool) -> None:
    """Lint every template: syntax, variables, unsafe constructs, other centers' templates, render
    budget, SMS segments with the footer, locales.

    The same linter the console publishes with and delivery sends with. Exits with status 1
    when there is an error finding: such a template is never used for a send (a missing
    locale is a warning).
    """
    from careflow.rendering.lint import blocking, lint_store

    with opened_runtime() as runtime:
        findings = lint_store(runtime)
        budget = runtime.settings.templates.sms_segment_budget
    if as_json:
        for finding in findings:
            click.echo(json.dumps(finding.as_dict(), ensure_ascii=False))
    elif findings:
        table = Table(title=f"{len(findings)} template finding(s)")
        for col in ("template", "line", "severity", "kind", "message"):
            table.add_column(col, overflow="fold")
        for f in findings:
            table.add_row(f.template, str(f.line or "-"), str(f.severity), str(f.kind), escape(f.message))
        out.print(table)
    else:
        out.print(f"all templates pass lint (SMS segment budget {budget})")
    if blocking(findings):
        sys.exit(1)
