"""What `careflow run` and `careflow events` tell a newcomer: this run apart from earlier ones,
the messages of a dry run, full-width tables in files, and dates of the day being planned."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterable
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from careflow.care import CarePlugin, Occasion, PlanContext
from careflow.cli import main
from careflow.config import load_settings
from careflow.planning.plan import plan
from careflow.runtime import Runtime
from careflow.storage.models import CareEvent, Customer, EventStatus
from careflow.testing import add_customer, parse_instant, run_care_day

NOW = parse_instant("2026-05-11T10:00:00+08:00")
CONFIG = """\
[database]
url = "{db_url}"
[channels.sms]
provider = "console"
[centers.main]
name = "Anxin Auto"
timezone = "Asia/Shanghai"
locale = "en"
[scheduler]
batch_size = {batch_size}
[plugins.birthday]
enabled = true
"""


def workspace(tmp_path: Path, db_url: str, birthdays: list[str], *, batch_size: int = 1000) -> dict[str, str]:
    """A careflow.toml and a migrated database whose customers have these MM-DD birthdays."""
    config = tmp_path / "careflow.toml"
    config.write_text(CONFIG.format(db_url=db_url, batch_size=batch_size), "utf-8")
    runtime = Runtime.build(load_settings(config, {}), migrate_schema=True)
    try:
        with runtime.sessions.begin() as session:
            for n, birthday in enumerate(birthdays, start=1):
                month, day = map(int, birthday.split("-"))
                add_customer(
                    session,
                    external_id=f"C{n}",
                    name=f"Customer {n}",
                    phone=f"+86138001380{n:02d}",
                    birthday=(1990, month, day),
                )
    finally:
        runtime.close()
    return {"CAREFLOW_CONFIG": str(config)}


def careflow(env: dict[str, str], *args: str) -> Result:
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result


def events_of(env: dict[str, str]) -> dict[str, CareEvent]:
    runtime = Runtime.build(load_settings(Path(env["CAREFLOW_CONFIG"]), {}))
    try:
        with runtime.sessions() as session:
            return {e.idempotency_key: e for e in session.scalars(select(CareEvent))}
    finally:
        runtime.close()


# --- item 19: this run apart from what earlier runs did -----------------------------------------


def test_a_second_run_sends_nothing_and_says_so_instead_of_counting_earlier_sends(tmp_path: Path) -> None:
    env = workspace(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", ["05-11", "05-11", "05-11"])

    first = careflow(env, "run", "--now", NOW.isoformat()).stdout
    assert re.search(r"care run: this run.*\n.*\n.*sent.*\n.*\n│ birthday\s*│\s*3 │", first)
    assert "already recorded by earlier runs" not in first

    again = careflow(env, "run", "--now", "2026-05-11T15:00:00+08:00").stdout
    this_run, found, earlier = again.partition("already recorded by earlier runs: 3 occasion(s)")
    assert found, again
    assert "(nothing new)" in this_run and "birthday" not in this_run
    assert re.search(r"│ birthday\s*│\s*3 │", earlier)  # sent by the first run, not this one

    lines = careflow(env, "run", "--json", "--now", "2026-05-11T16:00:00+08:00").stdout.splitlines()
    recorded = [json.loads(line) for line in lines]
    assert len(recorded) == 3
    assert all(r["already_recorded"] is True and r["status"] == "sent" for r in recorded)


def test_run_json_marks_what_this_run_recorded(tmp_path: Path) -> None:
    env = workspace(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", ["05-11"])
    [line] = careflow(env, "run", "--json", "--now", NOW.isoformat()).stdout.splitlines()
    assert json.loads(line)["already_recorded"] is False


# --- item 21: full-width tables in files, the messages of a dry run ---------------------------


def test_events_written_to_a_file_keep_every_row_on_one_line(tmp_path: Path) -> None:
    env = workspace(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", ["05-11"])
    careflow(env, "run", "--now", "2026-05-11T23:00:00+08:00")  # deferred, with a long reason
    [event] = events_of(env).values()
    reason = event.status_reason
    assert reason and len(reason) > 60

    listed = subprocess.run(
        [sys.executable, "-m", "careflow.cli", "events"],
        env={"CAREFLOW_CONFIG": env["CAREFLOW_CONFIG"], "PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,  # no terminal anywhere, as under cron or `> file`
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    [row] = [line for line in listed.stdout.splitlines() if "birthday" in line]
    assert reason in row and "+8613800138001" in row and len(row) > 80


def test_dry_run_shows_the_rendered_messages_with_customer_channel_and_status(tmp_path: Path) -> None:
    env = workspace(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", ["05-11", "05-11"])

    shown = careflow(env, "run", "--dry-run", "--now", "2026-05-11T07:00:00+08:00").stdout

    assert "birthday → Customer 1 (C1) via sms +8613800138001: would be deferred: quiet hours" in shown
    assert "  Anxin Auto: Happy birthday, Customer 1!" in shown  # the text delivery would send
    assert "Customer 2 (C2)" in shown
    assert events_of(env) == {}  # and nothing written


def test_dry_run_json_keeps_its_documented_fields(tmp_path: Path) -> None:
    env = workspace(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", ["05-11"])
    [line] = careflow(env, "run", "--dry-run", "--json", "--now", NOW.isoformat()).stdout.splitlines()
    message = json.loads(line)
    assert {"key", "plugin", "customer", "channel", "to", "body", "status", "reason"} <= set(message)
    assert message["status"] == "would be planned"
    assert message["body"].startswith("Anxin Auto: Happy birthday, Customer 1!")


def test_a_large_dry_run_shows_a_few_messages_per_plugin_and_counts_the_rest(tmp_path: Path) -> None:
    env = workspace(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", ["05-11"] * 7)

    few = careflow(env, "run", "--dry-run", "--messages", "2", "--now", NOW.isoformat()).stdout
    assert few.count("birthday → ") == 2
    assert "… and 5 more birthday message(s)" in few

    every = careflow(env, "run", "--dry-run", "--messages", "0", "--now", NOW.isoformat()).stdout
    assert every.count("birthday → ") == 7 and "more birthday" not in every


def test_a_dry_run_hands_its_rows_over_batch_by_batch_and_keeps_none(tmp_path: Path) -> None:
    env = workspace(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", ["05-11"] * 6, batch_size=2)
    runtime = Runtime.build(load_settings(Path(env["CAREFLOW_CONFIG"]), {}))
    batches: list[list[dict[str, Any]]] = []
    try:
        report = plan(runtime, now=NOW, dry_run=True, on_preview=batches.append)
    finally:
        runtime.close()
    assert report.preview == []  # nothing accumulates however many customers are due
    assert len(batches) >= 3 and sum(len(b) for b in batches) == 6


# --- item 18: a backfill is planned on its own day ------------------------------------------------


def test_a_backfill_is_planned_at_the_same_local_time_on_its_own_day() -> None:
    from careflow.service.care_run import planning_instant

    settings = load_settings(None, {})
    at = planning_instant(settings, parse_instant("2026-05-20T07:30:00+08:00"), date(2026, 5, 11))
    assert at == parse_instant("2026-05-11T07:30:00+08:00")
    today = parse_instant("2026-05-20T07:30:00+08:00")
    assert planning_instant(settings, today, date(2026, 5, 20)) == today
    assert planning_instant(settings, today, None) == today


@pytest.mark.parametrize("day", ["2026-05-11", "2026-05-25"], ids=["past-day", "future-day"])
def test_a_backfill_dry_run_and_real_run_defer_to_the_planned_days_morning(
    tmp_path: Path, db_url: str, day: str
) -> None:
    env = workspace(tmp_path, db_url, [day[5:]])
    night = "2026-05-20T06:00:00+08:00"  # before the 09:00-20:00 window, on another day

    [dry] = careflow(env, "run", "--date", day, "--now", night, "--dry-run", "--json").stdout.splitlines()
    [real] = careflow(env, "run", "--date", day, "--now", night, "--json").stdout.splitlines()

    expected = f"quiet hours (09:00-20:00 Asia/Shanghai): deferred until {day}T09:00:00+08:00"
    assert json.loads(dry)["status"] == "would be deferred" and json.loads(dry)["reason"] == expected
    assert json.loads(real)["status"] == "deferred" and json.loads(real)["reason"] == expected


def test_a_backfilled_message_whose_window_has_passed_waits_for_the_next_real_window(
    tmp_path: Path, db_url: str
) -> None:
    env = workspace(tmp_path, db_url, ["05-11"])
    careflow(env, "run", "--date", "2026-05-11", "--now", "2026-05-20T06:00:00+08:00")

    # Later that night: the backfill's 09:00 on May 11 has long passed, but it is night now.
    careflow(env, "run", "--now", "2026-05-20T06:30:00+08:00")
    [event] = events_of(env).values()
    assert event.status == EventStatus.DEFERRED
    assert (
        event.status_reason
        == "quiet hours (09:00-20:00 Asia/Shanghai): deferred until 2026-05-20T09:00:00+08:00"
    )

    careflow(env, "run", "--now", "2026-05-20T09:00:00+08:00")
    [event] = events_of(env).values()
    assert event.status == EventStatus.SENT


def test_the_sharded_summary_counts_deferred_and_expired_apart_from_earlier_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from collections import Counter

    from careflow.cli.commands.run import print_sharded_summary
    from careflow.planning.plan import PlanReport

    counts = Counter({"planned": 2, "deferred": 3, "expired": 1, "suppressed": 1, "already recorded": 5})
    print_sharded_summary(4, PlanReport(per_plugin={"birthday": counts}), as_json=True)
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line) == {
        "plugin": "birthday",
        "shards": 4,
        "planned": 2,
        "deferred": 3,
        "expired": 1,
        "suppressed": 1,
        "already recorded": 5,
    }


class _TodayOnly(CarePlugin):
    """A marketing occasion that is pointless after its own day (like a one-day offer)."""

    name = "today_only"
    narrows_in_sql = False

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        for customer in ctx.session.scalars(select(Customer).where(ctx.in_batch())):
            day = ctx.local_today(customer)
            yield Occasion(
                customer=customer,
                key="offer",
                period=day.isoformat(),
                due_date=day,
                template="birthday",
                context={"age": 36},
                expires_at=datetime.combine(day, time(20, 0), tzinfo=ZoneInfo("Asia/Shanghai")),
            )


def test_a_backfill_never_sends_what_expired_before_the_run(tmp_path: Path, db_url: str) -> None:
    env = workspace(tmp_path, db_url, ["01-01"])
    runtime = Runtime.build(load_settings(Path(env["CAREFLOW_CONFIG"]), {}))
    try:
        late = parse_instant("2026-05-20T10:00:00+08:00")
        sent = run_care_day(runtime, now=late, day=date(2026, 5, 11), plugins=[_TodayOnly()])
        with runtime.sessions() as session:
            [event] = session.scalars(select(CareEvent)).all()
    finally:
        runtime.close()
    assert sent == []  # planned on May 11 it was fine, but it is May 20 now
    assert event.status == EventStatus.EXPIRED
    assert event.status_reason == (
        "the occasion expired at 2026-05-11T20:00:00+08:00, "
        "before this run (2026-05-20T10:00:00+08:00) could send it"
    )
