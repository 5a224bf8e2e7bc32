"""``careflow plugins`` lists what is installed; ``careflow plugin`` has tools for plugin developers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from careflow.cli.base import err, friendly_errors, out
from careflow.config import load_settings
from careflow.errors import CareflowError


def register(main: click.Group) -> None:
    """Add this module's commands to the ``careflow`` group (see careflow.cli.app)."""
    main.add_command(plugin)
    main.add_command(plugins)


@click.group()
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
@friendly_errors
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


@click.command()
@friendly_errors
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
