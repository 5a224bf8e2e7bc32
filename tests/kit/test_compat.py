"""Plugins declare the careflow versions they support; a mismatch is a clear start-up message."""

from __future__ import annotations

import types
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from careflow import __version__
from careflow.care import CarePlugin
from careflow.cli import main
from careflow.compat import incompatibility
from careflow.hookspecs import HOOKSPEC_VERSION, hookimpl
from careflow.plugin_manager import load_plugins


def declares(requires: object) -> types.SimpleNamespace:
    return types.SimpleNamespace(careflow_requires=requires)


def test_a_plugin_that_says_nothing_or_matches_is_compatible() -> None:
    assert incompatibility(object()) is None
    assert incompatibility(declares(">=0.1,<0.2"), version="0.1.0") is None
    assert incompatibility(declares("~=0.1"), version="0.1.7") is None
    assert incompatibility(declares(">=0.1"), version="0.2.0rc1") is None  # pre-releases count


def test_a_mismatch_says_what_the_plugin_needs_and_what_is_running() -> None:
    problem = incompatibility(declares(">=0.2,<0.3"), version="0.1.0")
    assert problem == (
        f"needs careflow >=0.2,<0.3, but this is careflow 0.1.0 (hook spec version {HOOKSPEC_VERSION}); "
        "the plugin is not used. Install a release of the plugin made for careflow 0.1.0, "
        "or a careflow version the plugin supports"
    )


def test_a_declaration_that_is_not_a_specifier_is_reported() -> None:
    assert incompatibility(declares("0.1 or later")) == (
        "declares careflow_requires = '0.1 or later', which is not a version specifier "
        "(expected something like '>=0.1,<0.2')"
    )
    assert "not a version specifier" in (incompatibility(declares(0.1)) or "")


class FutureCare(CarePlugin):
    name = "future"
    careflow_requires = ">=99"


class FutureModule:
    careflow_requires = ">=99"

    @hookimpl
    def careflow_care_plugins(self) -> list[CarePlugin]:
        raise AssertionError("an incompatible plugin must never be called")


class ProvidesFutureCare:
    @hookimpl
    def careflow_care_plugins(self) -> list[CarePlugin]:
        return [FutureCare()]


def test_an_incompatible_plugin_object_or_care_plugin_is_not_used() -> None:
    registry = load_plugins([FutureModule(), ProvidesFutureCare()], entry_points_too=False)

    assert "future" not in registry.care_plugins
    names = [f.name for f in registry.failures]
    assert names == ["FutureModule", "ProvidesFutureCare (future)"]
    expected = f"needs careflow >=99, but this is careflow {__version__}"
    assert all(f.error.startswith(expected) for f in registry.failures)


@pytest.fixture
def installed_too_new(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real installed distribution (dist-info + entry point) whose plugin needs a future careflow."""
    module = f"careflow_too_new_{uuid.uuid4().hex[:8]}"
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{module}.py").write_text(
        'careflow_requires = ">=0.2,<0.3"\n\n'
        "from careflow.hookspecs import hookimpl\n\n\n"
        "@hookimpl\ndef careflow_care_plugins():\n    raise AssertionError('never called')\n",
        "utf-8",
    )
    dist = site / "careflow_too_new-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: careflow-too-new\nVersion: 1.0\n", "utf-8")
    (dist / "entry_points.txt").write_text(f"[careflow]\ntoo_new = {module}\n", "utf-8")
    monkeypatch.syspath_prepend(str(site))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("CAREFLOW_CONFIG", raising=False)
    return "too_new"


def test_start_up_names_the_incompatible_installed_plugin(installed_too_new: str) -> None:
    runner = CliRunner()
    init = runner.invoke(main, ["init"], terminal_width=300)
    plugins = runner.invoke(main, ["plugins"], terminal_width=300)

    expected = f"plugin {installed_too_new} is not used: needs careflow >=0.2,<0.3, but this is careflow"
    assert init.exit_code == 0, init.output
    assert expected in " ".join(init.output.split())  # every command that starts careflow says so
    assert plugins.exit_code == 0, plugins.output
    expected = f"plugin {installed_too_new} failed to load: needs careflow >=0.2,<0.3, but this is careflow"
    assert f"{expected} {__version__}" in " ".join(plugins.output.split())


class Misspelt:
    @hookimpl
    def careflow_care_plugin(self) -> list[CarePlugin]:  # the hook is careflow_care_plugins
        raise AssertionError("never called")


def test_a_misspelt_hook_is_reported_and_its_plugin_not_used() -> None:
    bad = Misspelt()
    registry = load_plugins([bad, ProvidesFutureCare()], entry_points_too=False)

    assert not registry.pm.is_registered(bad)
    [misspelt] = [f for f in registry.failures if f.name == "Misspelt"]
    assert misspelt.error.startswith(
        "implements careflow_care_plugin, which is not a careflow hook (known: careflow_care_plugins, "
    )
    assert misspelt.error.endswith("; the plugin is not used")
    assert "console" in registry.providers  # the other plugins still load


OLD_STYLE_PLUGIN = """
from careflow.care import CarePlugin, PlanContext
from careflow.hookspecs import hookimpl
from careflow.models import Customer, Purpose


class OldStyle(CarePlugin):
    name = "old_style"
    purpose = Purpose.SERVICE

    def occasions(self, ctx: PlanContext):
        return []


@hookimpl
def careflow_care_plugins():
    return [OldStyle()]
"""


def test_a_plugin_written_against_the_old_module_paths_still_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plugins generated before the public API import careflow.care, careflow.hookspecs, careflow.models."""
    import importlib.util
    import sys

    import careflow

    monkeypatch.delitem(sys.modules, "careflow.models", raising=False)
    path = tmp_path / "old_style_plugin.py"
    path.write_text(OLD_STYLE_PLUGIN, "utf-8")
    spec = importlib.util.spec_from_file_location(f"old_style_{uuid.uuid4().hex}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.warns(DeprecationWarning, match="import the models and Purpose from careflow"):
        spec.loader.exec_module(module)
    assert module.Customer is careflow.Customer and module.Purpose is careflow.Purpose
    registry = load_plugins([module], entry_points_too=False)
    assert "old_style" in registry.care_plugins and not registry.failures
