"""``careflow doctor``: a checklist of what careflow needs, with how to fix each problem."""

from __future__ import annotations

import sys

import click


def register(main: click.Group) -> None:
    """Add this module's commands to the ``careflow`` group (see careflow.cli.app)."""
    main.add_command(doctor)


@click.command()
def doctor() -> None:
    """Check config, database and migrations, broker, provider credentials and templates."""
    from careflow.cli.doctor_checks import run_checks

    failed = 0
    # Plain lines, never wrapped: operators paste them into tickets and grep them in logs.
    for check in run_checks():
        mark = click.style("✓", fg="green") if check.ok else click.style("✗", fg="red", bold=True)
        click.echo(f"{mark} {click.style(check.name, bold=True)}: {check.detail}")
        if not check.ok:
            failed += 1
            click.echo(f"    fix: {check.fix}")
    if failed:
        click.secho(f"{failed} problem(s) found", fg="red", bold=True)
        sys.exit(1)
    click.secho("all checks passed", fg="green")
