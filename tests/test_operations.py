"""Operating at scale: JSON logs that never leak numbers, Prometheus metrics on workers and for serve."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from careflow import metrics
from careflow.cli import main
from careflow.config import load_settings
from careflow.logs import JsonFormatter, mask
from careflow.service.care_run import run_day
from careflow.testing import add_customer, build_runtime, parse_instant
from tests.conftest import REDIS_URL

NOW = parse_instant("2026-05-11T10:00:00+08:00")


def test_json_log_lines_mask_phone_numbers_and_addresses() -> None:
    record = logging.LogRecord(
        "careflow.delivery",
        logging.WARNING,
        __file__,
        1,
        "event %s to %s failed",
        (7, "+8613800138000"),
        None,
    )
    record.recipient = "li.wei@example.com"
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "warning" and line["logger"] == "careflow.delivery"
    assert line["msg"] == "event 7 to +861********00 failed"
    assert line["recipient"] == "l***@example.com"
    assert "13800138" not in mask("call +86 138 0013 8000 now")


def test_cli_logs_json_when_asked(tmp_path: Path) -> None:
    runner = CliRunner()
    config = tmp_path / "careflow.toml"
    env = {"CAREFLOW_CONFIG": str(config), "CAREFLOW_DATABASE__URL": f"sqlite:///{tmp_path / 'c.db'}"}
    result = runner.invoke(main, ["--log-format", "json", "-v", "init"], env=env)
    assert result.exit_code == 0, result.output
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert logged and all({"ts", "level", "logger", "msg"} <= set(entry) for entry in logged)


def _asgi_get(app: Any, path: str) -> tuple[int, str]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": []}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body.decode()


def test_metrics_app_serves_planning_counts(tmp_path: Path) -> None:
    app = metrics.metrics_app()
    runtime = build_runtime(load_settings(_config(tmp_path, f"sqlite:///{tmp_path / 'c.db'}")))
    try:
        with runtime.sessions.begin() as session:
            add_customer(session, external_id="A1", birthday=(1990, 5, 11), locale="zh_CN")
            add_customer(session, external_id="A2", birthday=(1990, 5, 11), sms_consent=False)
        run_day(runtime, now=NOW)
    finally:
        runtime.close()
    status, text = _asgi_get(app, "/metrics")
    assert status == 200
    planned = _sample(text, "careflow_events_total", plugin="birthday", center="main", outcome="planned")
    suppressed = _sample(
        text, "careflow_events_total", plugin="birthday", center="main", outcome="suppressed"
    )
    assert planned is not None and planned >= 1  # counters are per process: other tests add to them
    assert suppressed is not None and suppressed >= 1
    assert (_sample(text, "careflow_planning_seconds_count") or 0) >= 1


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The summed value of ``name``'s samples whose labels include ``labels``, or None if none match."""
    found = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    return sum(found) if found else None


def _config(directory: Path, db_url: str, broker: str = "local", queue: str = "careflow") -> Path:
    path = directory / "careflow.toml"
    path.write_text(
        f"""
[database]
url = "{db_url}"
[broker]
url = "{broker}"
queue = "{queue}"
[channels.sms]
provider = "console"
[centers.main]
name = "Anxin"
timezone = "Asia/Shanghai"
locale = "zh_CN"
send_from = "00:00"  # around the clock: workers send at the real hour, while these tests pretend one
send_until = "24:00"
[plugins.birthday]
enabled = true
""",
        encoding="utf-8",
    )
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.services
def test_worker_exposes_dramatiq_and_careflow_metrics(pg_url: str, queue_name: str, tmp_path: Path) -> None:
    config = _config(tmp_path, pg_url, REDIS_URL, queue_name)
    runtime = build_runtime(load_settings(config))
    port = _free_port()
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "careflow.cli", "worker", "--metrics-port", str(port)],
        env={**os.environ, "CAREFLOW_CONFIG": str(config)},
        stdout=log,
        stderr=log,
    )
    try:
        with runtime.sessions.begin() as session:
            for i in range(3):
                add_customer(session, external_id=f"M{i}", phone=f"+861380000000{i}", birthday=(1990, 5, 11))
        run_day(runtime, now=NOW)
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                text = ""
            if _sample(text, "careflow_events_total", plugin="birthday", center="main", outcome="sent") == 3:
                break
            time.sleep(0.3)
        assert _sample(text, "careflow_events_total", plugin="birthday", center="main", outcome="sent") == 3
        # The three events travelled in one message ([delivery] batch_size), each counted on its own.
        assert _sample(text, "dramatiq_messages_total", actor_name="careflow_deliver_batch") == 1
        assert _sample(text, "careflow_queue_lag_seconds_count", plugin="birthday") == 3
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
        runtime.close()
