"""``careflow demo``: a workspace with sample customers, and today's care run on it."""

from __future__ import annotations

from pathlib import Path

import click

from careflow.cli.base import err, friendly_errors, out, parse_now


def register(main: click.Group) -> None:
    """Add this module's commands to the ``careflow`` group (see careflow.cli.app)."""
    main.add_command(demo)


@click.command()
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
@friendly_errors
def demo(directory: Path, customers: int, now_text: str | None) -> None:
    """Create a demo workspace with sample customers and run today's care on the embedded default."""
    from careflow.cli.demo_workspace import run_demo

    run_demo(directory, customers=customers, now=parse_now(now_text) if now_text else None, out=out, err=err)
