"""Command modules that add sub-commands to ``careflow`` (each imports ``careflow.cli.main``).

Keep one module per command group so the CLI stays readable; list it here to load it.
"""

from __future__ import annotations

import importlib

COMMAND_MODULES: tuple[str, ...] = (
    "careflow.commands.serve",
    "careflow.commands.templates",
    "careflow.commands.records",
    "careflow.commands.points",
    "careflow.commands.consent",
    "careflow.commands.report",
    "careflow.commands.retry",
    "careflow.commands.doctor",
    "careflow.commands.scheduler",
    "careflow.commands.plugin",
    "careflow.commands.users",
    "careflow.commands.console",
)


def load_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name)
