"""The benchmark runs end to end in CI (small N); it asserts that it works, never how fast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.services
def test_quick_benchmark_prints_planning_and_delivery_tables(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    header = (
        "| backend | customers | day | events | planning s | of which pre-planning s | events/s | peak MB "
        "| SQL floor s | ratio | ratio without pre-planning |"
    )
    assert header in out
    for backend in ("sqlite+local", "pg+redis", "pg+rabbitmq"):
        for day in ("birthday", "storm", "fixed"):
            assert f"| {backend} | 3,000 | {day} |" in out
    for broker in ("pg+redis", "pg+rabbitmq"):
        # Batched delivery at each worker count (2 threads each, and 8 too at the most workers),
        # against one event per message at the most workers and threads.
        assert f"| {broker} | 1 | 2 x 8 | 300 |" in out
        for workers, threads in ((1, 2), (2, 2), (2, 8)):
            assert f"| {broker} | 50 | {workers} x {threads} | 300 |" in out
        assert f"| {broker} | 50 | 1 x 8 |" not in out
    assert "Bare render loop:" in out
    assert "Segments computed by the day's first run" in out
    # careflow found exactly the due set the hand-written floor query found.
    for line in out.splitlines():
        if line.startswith("planning "):
            events = line.split(" events in ")[0].split()[-1]
            floor_rows = line.split(" rows)")[0].split("(")[-1]
            assert events == floor_rows, line
    assert not list(tmp_path.glob("*.db")), "quick runs clean up their databases"
