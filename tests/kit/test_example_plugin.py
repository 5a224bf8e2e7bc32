"""examples/careflow-tire-season: installed through its entry point, tested, and run through the CLI.

The package is copied to a temporary directory (so building it never writes into the
repository) and pip-installed into a throwaway virtualenv that sees this environment's
careflow (see ``tests/kit/venvs.py``); the test environment itself is never changed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.kit.venvs import Venv, make_venv

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "careflow-tire-season"

CONFIG = """\
[database]
url = "sqlite:///careflow.db"

[centers.main]
name = "Anxin Auto"
timezone = "Asia/Shanghai"
locale = "zh_CN"

[plugins.tire_season]
enabled = true
days_before = 30
"""

CUSTOMERS = """\
external_id,name,phone,email,birthday,locale,timezone,city,sms_consent,email_consent
H1,张伟,13800138001,,,zh_CN,Asia/Harbin,哈尔滨,yes,no
O1,Nils Berg,+4791234567,,,en,Europe/Oslo,Oslo,yes,no
N1,Kiri Walker,+64211234567,,,en,Pacific/Auckland,Christchurch,yes,no
S1,李娜,13800138002,,,zh_CN,Asia/Shanghai,Shanghai,yes,no
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Venv, Path]:
    root = tmp_path_factory.mktemp("tire-season")
    source = root / "careflow-tire-season"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", ".*cache"))
    venv = make_venv(root / "venv")
    venv.pip_install_editable(source)
    return venv, source


def test_its_own_tests_pass(installed: tuple[Venv, Path]) -> None:
    venv, source = installed
    result = venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=source)
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_careflow_lists_it_and_sends_its_reminders(installed: tuple[Venv, Path], tmp_path: Path) -> None:
    venv, _ = installed
    (tmp_path / "careflow.toml").write_text(CONFIG, "utf-8")
    (tmp_path / "customers.csv").write_text(CUSTOMERS, "utf-8")
    wide = {"COLUMNS": "250"}

    def careflow(*args: str) -> str:
        return venv.run("-m", "careflow", *args, cwd=tmp_path, env=wide).stdout

    careflow("init")
    careflow("import", "customers", "customers.csv")
    listed = careflow("plugins")
    assert "tire_season" in listed and "Reminds customers to fit winter tires" in listed
    assert "careflow-tire-season 0.1.0" in listed  # the distribution it came from

    lines = careflow("run", "--now", "2026-09-25T09:00:00+08:00", "--json").splitlines()
    events = {e["customer"]: e for e in map(json.loads, lines) if e["plugin"] == "tire_season"}

    assert sorted(events) == ["H1", "N1", "O1"]  # Shanghai has no winter tires
    # 09:00 in Shanghai is 03:00 in Oslo: that reminder waits for Oslo's sending hours.
    assert {c: e["status"] for c, e in events.items()} == {"H1": "sent", "N1": "sent", "O1": "deferred"}
    assert events["H1"]["key"].startswith("tire_season:winter:2026:")
    assert events["H1"]["body"].startswith(
        "【Anxin Auto】张伟您好，哈尔滨即将降霜入冬，建议您在2026年10月1日前换装冬季轮胎"
    )
    assert events["O1"]["body"] is None  # rendered when it is sent, in Oslo's morning
    assert "quiet hours" in events["O1"]["reason"]
    assert events["N1"]["key"].startswith("tire_season:summer:2026:")  # spring in New Zealand
    assert "swap back to summer tires by October 1, 2026" in events["N1"]["body"]

    # The next day the same occasions are found again, recognised, and not sent twice.
    again = careflow("run", "--now", "2026-09-26T09:00:00+08:00", "--json").splitlines()
    assert sorted(json.loads(line)["id"] for line in again) == sorted(e["id"] for e in events.values())
    recorded = careflow("events", "--plugin", "tire_season", "--json").splitlines()
    assert len(recorded) == 3
    assert "ok, 3 occasion(s)" in " ".join(careflow("plugins").split())
