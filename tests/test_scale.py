"""Scale: sharded planning equals a single-process run; dead shards re-plan safely; windows adapt."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pika
import pytest
from sqlalchemy import func, select

from careflow.config import load_settings
from careflow.planning.plan import plan
from careflow.planning.shards import DONE, RUNNING, create_run, plan_shard
from careflow.planning.windows import IdWindows
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import CareEvent, EventStatus, PlanShard
from careflow.testing import build_runtime, parse_instant
from tests.conftest import AMQP_URL, REDIS_URL

ROOT = Path(__file__).resolve().parent.parent
NOW = parse_instant("2026-05-11T10:00:00+08:00")
CUSTOMERS = 12_000  # about 33 birthdays on NOW's day, spread over the whole id range


def generate(url: str, customers: int = CUSTOMERS) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "generate.py"), "--url", url, "--customers", str(customers)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "rows/s" in done.stdout


def write_config(directory: Path, db_url: str, broker_url: str = "local", queue: str = "careflow") -> Path:
    """The benchmark's centers (bench/generate.py) with the console channel and the birthday plugin."""
    centers = "\n".join(
        f'[centers.{code}]\nname = "{code}"\ntimezone = "Asia/Shanghai"\nlocale = "zh_CN"\n'
        # Around the clock: the workers send at the real hour, while the test pretends one.
        'send_from = "00:00"\nsend_until = "24:00"'
        for code in ("bj", "sh", "gz", "cd", "hk")
    )
    path = directory / "careflow.toml"
    path.write_text(
        f"""
[database]
url = "{db_url}"
[broker]
url = "{broker_url}"
queue = "{queue}"
worker_threads = 4
[channels.sms]
provider = "console"
[scheduler]
batch_size = 500
{centers}
[plugins.birthday]
enabled = true
""",
        encoding="utf-8",
    )
    return path


def outcomes(runtime: Runtime) -> set[tuple[str, str]]:
    with runtime.sessions() as session:
        return {(k, s) for k, s in session.execute(select(CareEvent.idempotency_key, CareEvent.status))}


def wait_until_final(runtime: Runtime, timeout: float = 90.0) -> set[tuple[str, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = outcomes(runtime)
        if found and not {s for _, s in found} & {EventStatus.PLANNED, EventStatus.SENDING}:
            return found
        time.sleep(0.3)
    raise AssertionError(f"events not final after {timeout} s")


@pytest.mark.services
@pytest.mark.parametrize("broker_url", [REDIS_URL, AMQP_URL], ids=["redis", "rabbitmq"])
def test_sharded_run_on_two_workers_equals_a_single_process_run(
    broker_url: str, pg_url: str, queue_name: str, tmp_path: Path
) -> None:
    """Same customers, same instant: 2 workers planning 4 shards record exactly what one process does."""
    local_dir, sharded_dir = tmp_path / "local", tmp_path / "sharded"
    local_dir.mkdir()
    sharded_dir.mkdir()
    local_url = f"sqlite:///{local_dir / 'careflow.db'}"
    generate(local_url)
    generate(pg_url)
    local = build_runtime(load_settings(write_config(local_dir, local_url)))
    try:
        run_day(local, now=NOW)
        expected = outcomes(local)
    finally:
        local.close()
    assert len(expected) > 20
    assert {s for _, s in expected} == {EventStatus.SENT, EventStatus.SUPPRESSED}

    config = write_config(sharded_dir, pg_url, broker_url, queue_name)
    env = {**os.environ, "CAREFLOW_CONFIG": str(config)}
    logs = [open(sharded_dir / f"worker{i}.log", "wb") for i in range(2)]  # noqa: SIM115
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "careflow.cli", "worker", "--threads", "2"],
            env=env,
            stdout=log,
            stderr=log,
        )
        for log in logs
    ]
    try:
        ran = subprocess.run(
            [sys.executable, "-m", "careflow.cli", "run", "--now", NOW.isoformat(), "--shards", "4"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ran.returncode == 0, ran.stderr
        assert "planned by workers in 4 shards" in ran.stdout
        planned = sum(1 for _, s in expected if s == EventStatus.SENT)
        assert f"birthday │ {planned:>7} │" in ran.stdout.replace("┃", "│")
        sharded = build_runtime(load_settings(config))
        try:
            assert wait_until_final(sharded) == expected
            with sharded.sessions() as session:
                shards = session.scalars(select(PlanShard)).all()
            assert [s.status for s in shards] == [DONE] * 4
            assert sum(s.counts["birthday"].get("planned", 0) for s in shards) == planned
        finally:
            sharded.close()
    finally:
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.wait(timeout=30)
        for log in logs:
            log.close()
        if broker_url.startswith("amqp"):
            _delete_rabbit_queue(queue_name)
    # Between them the workers printed each planned message exactly once.
    printed = [(sharded_dir / f"worker{i}.log").read_text().count("[sms →") for i in range(2)]
    assert sum(printed) == planned


def _delete_rabbit_queue(queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
        channel.queue_delete(name)
    connection.close()


def test_a_shard_whose_worker_died_is_replanned_once_and_its_events_requeued(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'careflow.db'}"
    generate(url, 4_000)
    runtime = build_runtime(load_settings(write_config(tmp_path, url)))
    try:
        created = create_run(runtime, now=NOW, day=None, shards=2)
        assert created is not None
        first = created.shard_ids[0]
        with runtime.sessions.begin() as session:
            shard = session.get(PlanShard, first)
            assert shard is not None
            span = (shard.first_id, shard.last_id)
            # The dead worker claimed the shard and committed part of it, but queued nothing.
            shard.status, shard.attempts = RUNNING, 1
        plan(runtime, now=NOW, id_span=(span[0], (span[0] + span[1]) // 2))
        half = {k for k, _ in outcomes(runtime)}
        assert half

        queued: list[int] = []
        report = plan_shard(runtime, first, queued.extend)  # the broker redelivers the message
        assert report is not None
        assert report.per_plugin["birthday"]["already recorded"] == len(half)

        with runtime.sessions() as session:
            planned = set(
                session.scalars(
                    select(CareEvent.id).where(
                        CareEvent.customer_id.between(*span), CareEvent.status == EventStatus.PLANNED
                    )
                )
            )
            total = session.scalar(select(func.count()).select_from(CareEvent))
            shard = session.get(PlanShard, first)
            assert shard is not None and shard.status == DONE and shard.attempts == 2
        assert set(queued) == planned  # the dead attempt's events are queued too
        assert total == len({k for k, _ in outcomes(runtime)})  # no occasion recorded twice
        assert plan_shard(runtime, first, queued.extend) is None  # a late duplicate message: no-op
    finally:
        runtime.close()


def test_quiet_days_widen_planning_windows_and_busy_days_narrow_them() -> None:
    quiet = IdWindows((1, 1_000_000), 2_000, adaptive=True)
    windows = []
    for window in quiet:
        windows.append(window)
        quiet.found(3)  # almost nobody due
    assert len(windows) < 10
    assert windows[0] == (1, 2_000) and windows[-1][1] == 1_000_000
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(windows))

    busy = IdWindows((1, 100_000), 2_000, adaptive=True)
    for window in busy:
        width = window[1] - window[0] + 1
        busy.found(width // 5)  # a weather day: every fifth customer is due
    assert busy.width <= 5_000  # about half a batch of occasions per window

    fixed = IdWindows((1, 10_000), 2_000, adaptive=False)
    assert [w for w in fixed] == [(1, 2_000), (2_001, 4_000), (4_001, 6_000), (6_001, 8_000), (8_001, 10_000)]


def test_adaptive_windows_plan_exactly_what_fixed_windows_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'careflow.db'}"
    generate(url, 6_000)
    runtime = build_runtime(load_settings(write_config(tmp_path, url)))
    try:
        wide = plan(runtime, now=NOW, dry_run=True)
        assert wide.batches < 6_000 / 500  # the windows widened on this quiet day
        monkeypatch.setattr(type(runtime.registry.care_plugins["birthday"]), "narrows_in_sql", False)
        narrow = plan(runtime, now=NOW, dry_run=True)
        assert narrow.batches == 12
        assert sorted(wide.keys) == sorted(narrow.keys) and wide.keys
    finally:
        runtime.close()


NARROWING = ("birthday", "maintenance", "survey", "holidays", "weather", "winback")


def _seed_everyday(url: str, alerts: Path) -> None:
    """Some customers due for each narrowing plugin on NOW's day (on top of bench/generate.py's data)."""
    from datetime import date, timedelta

    from sqlalchemy import create_engine, update

    from careflow.storage.models import ServiceVisit, Vehicle

    engine = create_engine(url)
    with engine.begin() as conn:
        for vid in range(7, 6_000, 97):  # service due around NOW, spread over the id range
            conn.execute(
                update(Vehicle)
                .where(Vehicle.id == vid)
                .values(
                    next_service_due=date(2026, 5, 11) + timedelta(days=vid % 11 - 3),
                    next_service_from=date(2025, 11, 11),
                    next_service_reason="time",
                )
            )
        for vid in range(13, 6_000, 101):  # overdue by 5 to 404 days: steps due today and catch-ups
            conn.execute(
                update(Vehicle)
                .where(Vehicle.id == vid)
                .values(
                    next_service_due=date(2026, 5, 11) - timedelta(days=(vid * 7) % 400 + 5),
                    next_service_from=date(2025, 5, 11),
                    next_service_reason="time",
                )
            )
        for cid in range(11, 6_000, 89):  # visited yesterday: surveyed today
            conn.execute(
                ServiceVisit.__table__.insert().values(
                    customer_id=cid, vehicle_id=None, date=date(2026, 5, 10), kind="repair", mileage=1
                )
            )
    engine.dispose()
    alerts.write_text(
        "id,city,kind,starts,ends,headline\nbj-rain-1,Beijing,rainstorm,2026-05-11,2026-05-12,Rain\n",
        encoding="utf-8",
    )


def test_narrowing_plugins_find_in_wide_windows_exactly_what_a_full_scan_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each built-in plugin that narrows in SQL plans the same events whatever the windows are."""
    from careflow.testing import make_settings

    url = f"sqlite:///{tmp_path / 'careflow.db'}"
    generate(url, 6_000)
    alerts = tmp_path / "alerts.csv"
    _seed_everyday(url, alerts)
    plugins = {name: {"enabled": True} for name in NARROWING}
    plugins["weather"].update(provider="file", alerts_file=str(alerts))
    # Win-back through the visits' date index only (its weekly full scan would fall on NOW's Monday).
    plugins["winback"].update(full_scan_weekday="never")
    centers = {
        code: {"send_from": "00:00", "send_until": "24:00", "frequency_cap": 0}
        for code in ("bj", "sh", "gz", "cd", "hk")
    }

    def planned(batch_size: int, when: str) -> tuple[set[tuple[str, str]], int]:
        runtime = build_runtime(
            make_settings(url, plugins=plugins, centers=centers, scheduler={"batch_size": batch_size})
        )
        try:
            report = plan(runtime, now=parse_instant(when))
            assert not report.failures, report.failures
            found = outcomes(runtime)
            with runtime.sessions.begin() as session:
                session.execute(CareEvent.__table__.delete())
            return found, report.batches
        finally:
            runtime.close()

    for when in ("2026-05-11T10:00:00+08:00", "2026-10-01T10:00:00+08:00"):  # a day, and a holiday
        wide, wide_windows = planned(200, when)
        whole, _ = planned(100_000, when)  # one window: every customer in one query
        for name in NARROWING:
            monkeypatch.setattr(type(_plugin(url, name)), "narrows_in_sql", False)
        fixed, fixed_windows = planned(200, when)
        monkeypatch.undo()
        assert wide == whole == fixed
        plugins_due = {key.split(":", 1)[0] for key, _ in wide}
        if when.startswith("2026-05"):
            assert plugins_due == {"birthday", "maintenance", "survey", "weather", "winback"}
            assert any(key.startswith("maintenance:service-overdue:") for key, _ in wide)
            assert wide_windows < fixed_windows  # the quiet day's windows widened
        else:
            assert "holidays" in plugins_due and len(wide) >= 6_000


def _plugin(url: str, name: str) -> object:
    from careflow.plugin_manager import load_plugins

    return load_plugins().care_plugins[name]


def test_each_window_reads_only_its_own_index_entries(tmp_path: Path) -> None:
    """The birthday and maintenance queries seek (date, customer) indexes by the window's id range."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from careflow.testing import make_settings

    url = f"sqlite:///{tmp_path / 'careflow.db'}"
    generate(url, 3_000)
    seen: list[tuple[str, tuple[object, ...]]] = []

    def capture(_conn: object, _cursor: object, statement: str, parameters: object, *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and isinstance(parameters, tuple):
            seen.append((statement, parameters))

    runtime = build_runtime(
        make_settings(url, plugins={"birthday": {"enabled": True}, "maintenance": {"enabled": True}})
    )
    event.listen(Engine, "before_cursor_execute", capture)
    try:
        plan(runtime, now=NOW, dry_run=True)
    finally:
        event.remove(Engine, "before_cursor_execute", capture)
        runtime.close()
    plans = []
    with sqlite3.connect(tmp_path / "careflow.db") as db:
        for statement, parameters in seen:
            if "birth_month" in statement or "next_service_due" in statement:  # the two plugins
                rows = db.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
                plans.append(" | ".join(str(r[-1]) for r in rows))
    birthday = [p for p in plans if "ix_customers_birthday" in p]
    vehicles = [p for p in plans if "SEARCH vehicles" in p]
    assert birthday and vehicles, plans
    assert all(
        "ix_customers_birthday_id (birth_month=? AND birth_day=? AND id>? AND id<?)" in p for p in birthday
    )
    # SQLite picks the date index or the customer index by its statistics: either way, bounded
    # by the window's customer ids.
    assert all(
        "SEARCH vehicles USING INDEX" in p and "customer_id>? AND customer_id<?" in p for p in vehicles
    )
