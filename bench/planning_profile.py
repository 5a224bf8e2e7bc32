"""Where one day's planning time goes, next to the least database work the same day needs.

    python bench/planning_profile.py                        # SQLite, 10^6 customers, birthday day
    python bench/planning_profile.py --backend pg+redis --runs 10

Uses the data of ``bench/run.py`` (generated there first). Part one plans the day ``--runs``
times in one process, as ``careflow run`` does (heap settled after start-up), and times each
step of ``careflow.planning.plan`` (the plugins in their threads, consents, channel choice,
timing and caps, the outbox insert) and the garbage collector. Part two does, through the
database driver alone, the work any planner must do for the same due set: the floor's query,
each due customer's consents and the insert of the outbox rows, with foreign keys checked,
in a transaction that is rolled back. Both are medians of the runs.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as bench  # noqa: E402
from sqlalchemy import create_engine  # noqa: E402

import careflow.planning.plan as planner  # noqa: E402

# The planner's steps, by the names it calls them under (module careflow.planning.plan).
STEPS = (
    "run_plugin_batch",
    "load_consents",
    "choose_channel",
    "apply_timing_and_caps",
    "insert_ignoring_duplicates",
    "_adopt",
    "_malformed",
)
OUTBOX_COLUMNS = (
    "idempotency_key, center_id, customer_id, plugin, occasion, period, purpose, priority, due_date, "
    "channel, recipient, channel_reason, template, locale, context, status, attempts, needs_reconcile, "
    "created_at, updated_at"
)


def timed(spent: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - started

    return wrapper


def careflow_steps(url: str, broker_url: str, scenario: str, runs: int) -> dict[str, list[float]]:
    queue = "careflow_profile"
    config = bench.write_config(Path("/tmp"), url, broker_url, queue, scenario=scenario)
    spent: dict[str, float] = defaultdict(float)
    for name in STEPS:
        setattr(planner, name, timed(spent, name, getattr(planner, name)))
    collecting: dict[str, float] = {}

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            collecting["since"] = time.perf_counter()
        elif "since" in collecting:
            spent["garbage collector"] += time.perf_counter() - collecting.pop("since")

    figures: dict[str, list[float]] = defaultdict(list)
    gc.callbacks.append(on_gc)
    try:
        with bench.planning_runtime(config) as (runtime, enqueue):
            for index in range(runs + 1):  # the first run warms caches (and may compute segments)
                bench.reset_events(url)
                bench.clean_queue(broker_url, queue)
                spent.clear()
                started = time.perf_counter()
                planner.plan(runtime, now=bench.NOW, enqueue=enqueue)
                total = time.perf_counter() - started
                if index:
                    figures["planning, in all"].append(total)
                    for name in (*STEPS, "garbage collector"):
                        figures[name].append(spent[name])
    finally:
        gc.callbacks.remove(on_gc)
        bench.reset_events(url)
        bench.clean_queue(broker_url, queue)
        config.unlink()
    return figures


def driver_minimum(url: str, scenario: str, runs: int) -> dict[str, list[float]]:
    """The floor's query, the due customers' consents and the outbox insert, through the driver."""
    figures: dict[str, list[float]] = defaultdict(list)
    engine = create_engine(url)
    postgres = engine.dialect.name == "postgresql"
    mark = "%s" if postgres else "?"
    now = bench.NOW.astimezone(UTC)
    try:
        for _ in range(runs):
            seconds, rows = bench._floor_once(url, scenario)
            figures["floor: the due set's query"].append(seconds)
            ids = sorted({row[0] for row in rows})
            with engine.connect() as conn:
                raw: Any = conn.connection.driver_connection
                cursor = raw.cursor()
                if not postgres:
                    cursor.execute("PRAGMA foreign_keys=ON")
                started = time.perf_counter()
                wanted = ", ".join([mark] * len(ids))
                consents = "SELECT customer_id, channel, purpose, granted FROM consents WHERE customer_id IN"
                cursor.execute(f"{consents} ({wanted})", ids)
                cursor.fetchall()
                figures["consents of the due customers"].append(time.perf_counter() - started)
                outbox = [
                    (
                        f"profile:birthday:2026:{row[0]}",
                        row[1],
                        row[0],
                        "birthday",
                        "birthday",
                        "2026",
                        "marketing",
                        20,
                        now.date(),
                        "sms",
                        row[3],
                        "sms: first in the center's channel order",
                        "birthday",
                        "zh_CN",
                        json.dumps({"age": 38}),
                        "planned",
                        0,
                        False,
                        now if postgres else now.strftime("%Y-%m-%d %H:%M:%S.%f"),
                        now if postgres else now.strftime("%Y-%m-%d %H:%M:%S.%f"),
                    )
                    for row in rows
                ]
                started = time.perf_counter()
                cursor.executemany(
                    f"INSERT INTO care_events ({OUTBOX_COLUMNS}) VALUES ({', '.join([mark] * 20)}) "
                    "ON CONFLICT (idempotency_key) DO NOTHING",
                    outbox,
                )
                figures["outbox insert (foreign keys checked)"].append(time.perf_counter() - started)
                cursor.close()
                conn.rollback()
    finally:
        engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=list(bench.BACKENDS), default="sqlite+local")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--day", choices=["birthday", "fixed"], default="birthday")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--data-dir", default="/tmp/careflow-bench")
    args = parser.parse_args()
    kind = "sqlite" if args.backend.startswith("sqlite") else "pg"
    url = bench.database_url(kind, args.customers, Path(args.data_dir), "")
    bench.ensure_data(url, args.customers)
    steps = careflow_steps(url, bench.BACKENDS[args.backend], args.day, args.runs)
    minimum = driver_minimum(url, args.day, args.runs)
    print(f"{args.backend}, {args.customers:,} customers, {args.day} day; medians of {args.runs} runs (ms)")
    print("\ncareflow's planning, by step (steps overlap: the plugins' threads are waited for)")
    for name, values in steps.items():
        print(f"  {name:<40} {statistics.median(values) * 1000:8.1f}")
    print("\nthe least database work for the same due set, through the driver")
    for name, values in minimum.items():
        print(f"  {name:<40} {statistics.median(values) * 1000:8.1f}")
    least = sum(statistics.median(values) for values in minimum.values())
    floor = statistics.median(minimum["floor: the due set's query"])
    planning = statistics.median(steps["planning, in all"])
    print(f"  {'sum':<40} {least * 1000:8.1f}  = {least / floor:.1f}x the floor's query")
    print(
        f"\ncareflow: {planning / floor:.1f}x the floor's query, "
        f"{planning / least:.1f}x the least database work"
    )


if __name__ == "__main__":
    main()
