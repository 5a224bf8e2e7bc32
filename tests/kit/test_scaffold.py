"""``careflow plugin new``: the generated package installs, is found, and passes its own tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from careflow.cli import main
from careflow.devtools.scaffold import PluginNames, careflow_requires, create_plugin_package
from careflow.errors import CareflowError
from tests.kit.venvs import Venv, make_venv


def test_names_are_derived_from_the_one_typed() -> None:
    names = PluginNames.from_name("oil-change")
    assert (names.plugin, names.dist, names.module, names.cls, names.title) == (
        "oil_change",
        "careflow-oil-change",
        "careflow_oil_change",
        "OilChange",
        "Oil change",
    )
    assert PluginNames.from_name("careflow-oil_change") == names


@pytest.mark.parametrize("bad", ["Oil", "1st", "oil change", "oil--change", "oil-", "x" * 41, "油"])
def test_a_name_that_cannot_be_a_package_is_refused(bad: str) -> None:
    with pytest.raises(CareflowError, match="use lower-case letters and digits"):
        PluginNames.from_name(bad)


def test_new_plugins_claim_the_running_careflow_series() -> None:
    assert careflow_requires("0.1.0") == ">=0.1,<0.2"
    assert careflow_requires("0.3.2") == ">=0.3,<0.4"
    assert careflow_requires("1.4.0") == ">=1.4,<2"


def test_an_existing_directory_with_files_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine", "utf-8")
    with pytest.raises(CareflowError, match="exists and is not empty"):
        create_plugin_package("oil-change", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_the_name_of_an_installed_plugin_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["plugin", "new", "birthday", "--dir", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "a care plugin named 'birthday' is already installed" in result.output
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Venv, Path, str]:
    root = tmp_path_factory.mktemp("scaffold")
    result = CliRunner().invoke(main, ["plugin", "new", "visit-follow-up", "--dir", str(root / "pkg")])
    assert result.exit_code == 0, result.output
    venv = make_venv(root / "venv")
    venv.pip_install_editable(root / "pkg")
    return venv, root / "pkg", result.output


def test_the_package_has_everything_a_plugin_needs(generated: tuple[Venv, Path, str]) -> None:
    _, pkg, output = generated
    files = sorted(
        str(p.relative_to(pkg)) for p in pkg.rglob("*") if p.is_file() and "egg-info" not in str(p)
    )
    assert files == [
        "README.md",
        "pyproject.toml",
        "src/careflow_visit_follow_up/__init__.py",
        "src/careflow_visit_follow_up/plugin.py",
        "src/careflow_visit_follow_up/py.typed",
        "src/careflow_visit_follow_up/templates/visit_follow_up/sms.en.j2",
        "src/careflow_visit_follow_up/templates/visit_follow_up/sms.zh_CN.j2",
        "tests/test_plugin.py",
    ]
    pyproject = (pkg / "pyproject.toml").read_text("utf-8")
    assert '[project.entry-points.careflow]\nvisit_follow_up = "careflow_visit_follow_up.plugin"' in pyproject
    plugin = (pkg / "src/careflow_visit_follow_up/plugin.py").read_text("utf-8")
    assert 'careflow_requires = ">=0.1,<0.2"' in plugin
    assert "class VisitFollowUpSettings(PluginSettings):" in plugin
    assert "add [plugins.visit_follow_up] enabled = true to careflow.toml" in output


def test_the_generated_tests_pass_as_generated(generated: tuple[Venv, Path, str]) -> None:
    venv, pkg, _ = generated
    result = venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=pkg)
    assert "4 passed" in result.stdout, result.stdout


def test_careflow_finds_the_installed_package(generated: tuple[Venv, Path, str], tmp_path: Path) -> None:
    venv, _, _ = generated
    (tmp_path / "careflow.toml").write_text("[plugins.visit_follow_up]\nenabled = true\n", "utf-8")
    listed = venv.run("-m", "careflow", "plugins", cwd=tmp_path, env={"COLUMNS": "250"}).stdout
    assert "visit_follow_up" in listed and "Follows up a few days after a service visit." in listed
