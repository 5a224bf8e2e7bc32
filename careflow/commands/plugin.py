"""``careflow plugin``: tools for plugin developers (``careflow plugins`` lists what is installed)."""

from __future__ import annotations

from pathlib import Path

import click

from careflow.cli import _friendly_errors, main
from careflow.errors import CareflowError


@main.group()
def plugin() -> None:
    """Create care plugins (see docs/plugins.md)."""


@plugin.command(name="new")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to create the package (default: ./careflow-NAME).",
)
@_friendly_errors
def new(name: str, directory: Path | None) -> None:
    """Create an installable care plugin package NAME, with templates, settings and passing tests."""
    from careflow.devtools.scaffold import PluginNames, create_plugin_package
    from careflow.plugin_manager import load_plugins

    wanted = PluginNames.from_name(name).plugin
    registry = load_plugins()
    if wanted in registry.care_plugins:
        raise CareflowError(
            f"a care plugin named {wanted!r} is already installed (from {registry.sources[wanted]}); "
            "choose another name"
        )
    names, target, written = create_plugin_package(name, directory)
    click.echo(f"created {names.dist} in {target}:")
    for path in written:
        click.echo(f"  {path.relative_to(target)}")
    click.echo(
        "\nnext:\n"
        f"  pip install -e {target}        # into careflow's environment\n"
        f"  pytest {target}                # its tests pass as generated\n"
        f"  careflow plugins               # lists {names.plugin!r}\n"
        f"  add [plugins.{names.plugin}] enabled = true to careflow.toml, then: careflow run --dry-run"
    )
