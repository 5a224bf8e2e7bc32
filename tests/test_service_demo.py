"""`careflow plugins` lists the service plugins with their settings; the demo shows them firing."""

from __future__ import annotations

import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import create_engine, text

from careflow.cli import main
from careflow.cli.demo_workspace import run_demo
from careflow.cli.doctor_checks import run_checks
from careflow.config import load_settings
from careflow.testing import parse_instant


def test_plugins_lists_maintenance_and_points_with_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAREFLOW_CONFIG", raising=False)
    (tmp_path / "careflow.toml").write_text(
        '[database]\nurl = "sqlite:///x.db"\n[plugins.maintenance]\nenabled = true\ndaily_capacity = 12\n',
        "utf-8",
    )
    result = CliRunner().invoke(main, ["plugins"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("maintenance" in line and "daily_capacity" in line and "12" in line for line in lines)
    assert any("points" in line and "block_points" in line and "1000" in line for line in lines)


def test_demo_shows_maintenance_and_points_firing(tmp_path: Path) -> None:
    stream = StringIO()
    console = Console(file=stream, width=200)
    run_demo(
        tmp_path, customers=120, now=parse_instant("2026-11-23T09:00:00+08:00"), out=console, err=console
    )
    engine = create_engine(f"sqlite:///{tmp_path / 'careflow.db'}")
    with engine.connect() as conn:
        fired = {
            (plugin, occasion)
            for plugin, occasion in conn.execute(
                text("SELECT plugin, occasion FROM care_events WHERE status = 'sent'")
            )
        }
    engine.dispose()
    assert {("maintenance", "service-soon"), ("maintenance", "service-due")} <= fired
    assert {("points", "threshold"), ("points", "points-expiring"), ("points", "voucher-expiring")} <= fired
    assert "vehicles.csv and visits.csv: 120 vehicles" in stream.getvalue()


@pytest.mark.parametrize("on_path", [False, True], ids=["venv-off-path", "venv-on-path"])
def test_demo_ends_with_commands_that_work_where_the_user_stands(tmp_path: Path, on_path: bool) -> None:
    # A fresh clone after `make demo`: careflow lives in ./.venv/bin, usually not on PATH.
    clone = tmp_path / "careflow"
    clone.mkdir()
    (clone / ".venv").symlink_to(Path(sys.executable).parent.parent)
    path = "/usr/bin:/bin" if not on_path else f"{clone / '.venv' / 'bin'}:/usr/bin:/bin"
    env = {"PATH": path, "HOME": str(tmp_path), "COLUMNS": "200"}

    def shell(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True, timeout=300
        )

    demo = shell(".venv/bin/careflow demo --dir careflow-demo --customers 40 --now 2026-11-23T09:00:00+08:00")
    assert demo.returncode == 0, demo.stderr
    [inspect] = [line for line in demo.stdout.splitlines() if line.startswith("Inspect: ")]
    [again] = re.findall(r"Run '([^']+)' again", demo.stdout)
    command = inspect.removeprefix("Inspect: ")
    assert command == (
        "cd careflow-demo && careflow events"
        if on_path
        else "cd careflow-demo && ../.venv/bin/careflow events"
    )
    listed = shell(command)
    assert listed.returncode == 0, listed.stderr
    assert "care event(s)" in listed.stdout and "birthday" in listed.stdout
    rerun = shell(again + " --customers 40 --now 2026-11-23T09:00:00+08:00")
    assert rerun.returncode == 0, rerun.stderr


def test_a_second_demo_run_says_nothing_new_instead_of_listing_every_message_as_sent(tmp_path: Path) -> None:
    now = parse_instant("2026-11-23T09:00:00+08:00")
    run_demo(tmp_path, customers=60, now=now, out=Console(file=StringIO()), err=Console(file=StringIO()))
    stream = StringIO()
    console = Console(file=stream, width=200)

    run_demo(tmp_path, customers=60, now=now, out=console, err=console)

    second = stream.getvalue()
    assert "nothing new this run: every occasion due today was recorded by an earlier run" in second
    assert not [line for line in second.splitlines() if line.startswith("sent ")]
    this_run, _, earlier = second.partition("already recorded by earlier runs")
    assert "(nothing new)" in this_run and re.search(r"birthday\s*│\s*\d+", earlier)


def test_a_fresh_demo_workspace_passes_doctor(tmp_path: Path) -> None:
    """Doctor lints the shipped texts with the samples sends and `templates lint` use (issue 13, item 12)."""
    quiet = Console(file=StringIO())
    run_demo(tmp_path, customers=30, now=parse_instant("2026-11-23T09:00:00+08:00"), out=quiet, err=quiet)
    settings = load_settings(tmp_path / "careflow.toml")

    checks = {check.name: check for check in run_checks(lambda: settings)}

    assert checks["templates"].ok, checks["templates"].detail
    assert [name for name, check in checks.items() if not check.ok] == []
