"""The ``careflow`` group, and every command module registered onto it, in one explicit list."""

from __future__ import annotations

import logging

import click

from careflow.cli.commands import (
    consent,
    console,
    demo,
    doctor,
    events,
    init,
    plugin,
    points,
    records,
    report,
    retry,
    run,
    scheduler,
    serve,
    templates,
    users,
    worker,
)
from careflow.version import __version__


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


# Each module adds its commands through register(main); none imports this module.
COMMAND_MODULES = (
    init,
    records,
    run,
    events,
    worker,
    scheduler,
    retry,
    serve,
    console,
    templates,
    points,
    consent,
    report,
    doctor,
    plugin,
    users,
    demo,
)
for _module in COMMAND_MODULES:
    _module.register(main)
