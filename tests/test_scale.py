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
from careflow.daily import run_day
from careflow.models import CareEvent, EventStatus, PlanShard
from careflow.runtime import Runtime
from careflow.scheduler import IdWindows, plan
from careflow.sharding import DONE, RUNNING, create_run, plan_shard
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
        f'[centers.{code}]\nname = "{code}"\ntimezone = "Asia/Shanghai"\nlocale = "zh_CN"'
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
    assert len(windows) < 6
    assert windows[0] == (1, 2_000 * IdWindows.GROWTH) and windows[-1][1] == 1_000_000
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
