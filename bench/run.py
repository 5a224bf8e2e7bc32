"""careflow at scale, measured against the floor.

For each size and backend (SQLite + local broker, PostgreSQL + Redis, PostgreSQL + RabbitMQ):
planning time, events/second and peak memory of ``plan`` (in a fresh subprocess, RSS from
``getrusage``), next to the floor: one hand-written SQL query returning the same due set.
Then delivery throughput through the queue to the Twilio-compatible test server (its own
process) with 1, 2 and 4 ``careflow worker`` processes, next to a bare render loop and the
test server's own ceiling. Every enabled care plugin runs. Days ("scenarios"): "birthday"
(the birthday plugin, ~0.3% due), "storm" (birthdays plus a bench-only plugin making 20% of
customers due, like a weather day) and "fixed" (a bench-only plugin making exactly 300
customers due at any size, to show planning cost follows the due set, not the customer count).

    python bench/run.py                       # 10^5 and 10^6 customers, everything (takes a while)
    python bench/run.py --quick               # small N, for CI: proves it works, asserts no timings
    python bench/run.py --sizes 100000 --backends sqlite+local --no-delivery

Data is generated once per size (bench/generate.py) and reused: SQLite files under
``--data-dir``, PostgreSQL databases ``careflow_bench_<N>`` (``CAREFLOW_BENCH_PG_ADMIN``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import generate  # noqa: E402
import storm_day  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from sqlalchemy import and_, create_engine, func, or_, select, text, update  # noqa: E402

from careflow.config import load_settings  # noqa: E402
from careflow.storage.models import (  # noqa: E402
    CareEvent,
    Center,
    Consent,
    Customer,
    EventStatus,
    ServiceVisit,
    Vehicle,
)

NOW = datetime.fromisoformat("2026-05-11T10:00:00+08:00")
PG_ADMIN = os.environ.get("CAREFLOW_BENCH_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("CAREFLOW_BENCH_REDIS", "redis://127.0.0.1:6379/14")
AMQP_URL = os.environ.get("CAREFLOW_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
BACKENDS = {"sqlite+local": "local", "pg+redis": REDIS_URL, "pg+rabbitmq": AMQP_URL}
SCENARIOS = ("birthday", "storm", "fixed", "everyday")
# careflow's own care plugins; each day names exactly the ones it runs (all others are switched off).
BUILTIN_PLUGINS = ("birthday", "maintenance", "points", "holidays", "survey", "weather", "winback")
DAY_PLUGINS: dict[str, tuple[str, ...]] = {
    "birthday": ("birthday",),
    "storm": ("birthday", "bench_storm"),
    "fixed": ("bench_fixed",),
    # Built-in plugins that narrow in SQL. Not points: its threshold check sums every
    # customer's live lots in each window. Not winback: it narrows by visit date, but the
    # bench's day is a Monday, its default weekly full scan (and its due set would need a
    # floor query of its own, "no win-back event for this lapse yet").
    "everyday": ("birthday", "holidays", "maintenance", "survey", "weather"),
}
# How many fresh processes plan each day; the best is reported (the floor is a best of three too).
PLAN_RUNS = 3


# ---------------------------------------------------------------- data and configuration


def database_url(backend: str, customers: int, data_dir: Path, tag: str) -> str:
    if backend.startswith("sqlite"):
        return f"sqlite:///{data_dir / f'bench_{customers}{tag}.db'}"
    name = f"careflow_bench_{customers}{tag}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}):
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def drop_database(url: str) -> None:
    if url.startswith("sqlite"):
        for suffix in ("", "-wal", "-shm"):
            Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
        return
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def ensure_data(url: str, customers: int) -> None:
    """Generate ``customers`` customers unless the database already holds exactly that many."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            have = conn.scalar(select(func.count()).select_from(Customer))
    except Exception:
        have = None
    finally:
        engine.dispose()
    if have == customers:
        upgrade_schema(url)
        return
    if have:  # an interrupted generation: start again from an empty database
        drop_database(url)
        if not url.startswith("sqlite"):
            admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"'))
            admin.dispose()
    print(f"generating {customers:,} customers into {_short(url)}", flush=True)
    generate.generate(url, customers)


def upgrade_schema(url: str) -> None:
    """Bring an existing bench database to the newest migration (new indexes), then refresh statistics."""
    from careflow.storage.db import alembic_config, make_engine, migrate

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            current = conn.scalar(text("SELECT version_num FROM alembic_version"))
        head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
        if current != head:
            print(f"migrating {_short(url)} from {current} to {head}", flush=True)
            migrate(engine)
            with engine.connect() as conn:
                conn.execute(text("ANALYZE"))
                conn.commit()
    finally:
        engine.dispose()


def _short(url: str) -> str:
    return url.split("@")[-1]


def write_config(
    directory: Path,
    url: str,
    broker: str,
    queue: str,
    *,
    scenario: str,
    twilio: dict[str, str] | None = None,
    delivery_batch: int | None = None,
) -> Path:
    centers = "\n".join(
        # Throughput is measured, not policy: send around the clock, no cap per customer.
        f'[centers.{code}]\nname = "{name}"\ntimezone = "{tz}"\nlocale = "{locale}"\n'
        f'send_from = "00:00"\nsend_until = "24:00"\nfrequency_cap = 0'
        for code, name, tz, locale in generate.CENTERS
    )
    channel = 'provider = "console"'
    if twilio:
        channel = (
            f'provider = "twilio"\n[twilio]\naccount_sid = "{twilio["account_sid"]}"\n'
            f'from_number = "+15005550006"\nbase_url = "{twilio["url"]}"\n'
            "messages_per_second = 0  # the sender's rate limit would cap the throughput measured"
        )
    path = directory / f"careflow-{uuid.uuid4().hex[:8]}.toml"
    path.write_text(
        f"""
[database]
url = "{url}"
[broker]
url = "{broker}"
queue = "{queue}"
worker_threads = 8
[channels.sms]
{channel}
{f"[delivery]{chr(10)}batch_size = {delivery_batch}" if delivery_batch else ""}
{centers}
{_plugin_sections(scenario, directory)}
""",
        encoding="utf-8",
    )
    return path


def _plugin_sections(scenario: str, directory: Path) -> str:
    """Every built-in care plugin switched on or off explicitly: a day runs exactly its own plugins.

    The bench-only plugins' sections are absent on birthday days, which standard workers
    (without ``bench/storm_day.py`` loaded) serve in the delivery measurement.
    """
    wanted = DAY_PLUGINS[scenario]
    sections = [f"[plugins.{name}]\nenabled = {str(name in wanted).lower()}" for name in BUILTIN_PLUGINS]
    if "weather" in wanted:
        # Never the internet: the local bureau's file provider, with a calm day in the bench's cities.
        alerts = directory / "bench-weather-alerts.csv"
        alerts.write_text(
            "city,kind,starts,ends,headline,id\n"
            "Harbin,snow,2026-05-11,2026-05-11,Snow warning,bench-harbin-snow\n",
            encoding="utf-8",
        )
        sections[BUILTIN_PLUGINS.index("weather")] += f'\nprovider = "file"\nalerts_file = "{alerts}"'
    if scenario != "birthday":
        sections += [
            f"[plugins.bench_{name}]\nenabled = {str(f'bench_{name}' in wanted).lower()}"
            for name in ("storm", "fixed")
        ]
    return "\n".join(sections)


def forget_segments(url: str) -> None:
    """Drop the record that today's segments are computed (an earlier run of the bench may have)."""
    from careflow.customers.segments import SEGMENTS_JOB

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM scheduler_runs WHERE job LIKE :job"), {"job": f"{SEGMENTS_JOB}%"})
    engine.dispose()


def reset_events(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in ("plan_shards", "plan_runs", "care_events"):
            with suppress(Exception):
                conn.execute(text(f"DELETE FROM {table}"))
    engine.dispose()


# ---------------------------------------------------------------- planning (child process)


@contextmanager
def planning_runtime(config: Path) -> Iterator[tuple[Any, Callable[[Sequence[int]], None]]]:
    """The runtime ``careflow run`` would plan with (heap settled), and how it queues events."""
    from careflow.delivery.actors import build_actors
    from careflow.delivery.broker import LOCAL, make_broker
    from careflow.heap import settle_after_startup
    from careflow.testing import build_runtime

    runtime = build_runtime(load_settings(config), extra_plugins=[storm_day])
    broker = make_broker(runtime.settings.broker.url)
    actors = build_actors(broker, runtime)
    settle_after_startup()  # as `careflow run` does once its runtime is built

    def enqueue(ids: Sequence[int]) -> None:
        actors.enqueue_deliveries(ids)
        if runtime.settings.broker.url == LOCAL:
            broker.flush_all()  # the in-process queue: no worker here, delivery is measured apart

    try:
        yield runtime, enqueue
    finally:
        broker.close()
        runtime.close()


def plan_child(config: Path) -> None:
    """Plan one day in this fresh process and print the figures as JSON (peak RSS included)."""
    from careflow.planning.plan import plan

    with planning_runtime(config) as (runtime, enqueue):
        started = time.perf_counter()
        report = plan(runtime, now=NOW, enqueue=enqueue)
        seconds = time.perf_counter() - started
        plugins = sorted(runtime.registry.enabled(runtime.settings))
    figures = {
        "seconds": seconds,
        # The nightly segment refresh and each plugin's prepare(): once per run, over every customer.
        "prepare_seconds": report.prepare_seconds,
        "occasions": report.occasions,
        "new": report.new,
        "batches": report.batches,
        "plugins": plugins,
        "due": sum(sum(c.values()) for name, c in report.per_plugin.items() if name != "bundle"),
        "failures": [f"{f.plugin}: {f.error}" for f in report.failures],
    }
    print(json.dumps({**figures, "peak_mb": own_peak_mb()}))


def own_peak_mb() -> float:
    """This process's peak RSS. Not ru_maxrss: Linux carries that over from the parent across exec."""
    with suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_planning(
    config: Path, url: str, broker_url: str, queue: str, runs: int = PLAN_RUNS
) -> dict[str, Any]:
    """The best of ``runs`` fresh-process plans of the same day, its events reset before each.

    Measured like the floor (best of three, so warm caches); the peak memory is the highest seen.
    """
    results = []
    for _ in range(runs):
        reset_events(url)
        clean_queue(broker_url, queue)
        done = subprocess.run(
            [sys.executable, __file__, "_plan", str(config)],
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"planning failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    best: dict[str, Any] = min(results, key=lambda r: r["seconds"])
    best["all_seconds"] = [r["seconds"] for r in results]
    best["peak_mb"] = max(r["peak_mb"] for r in results)
    return best


# ---------------------------------------------------------------- the floor


def floor_rows(url: str, scenario: str, repeat: int = 3) -> tuple[float, list[tuple[Any, ...]]]:
    """The best of ``repeat`` timings of the floor query (a floor is a lower bound: warm caches)."""
    timings = [_floor_once(url, scenario) for _ in range(repeat)]
    return min(t for t, _ in timings), timings[-1][1]


def _floor_once(url: str, scenario: str) -> tuple[float, list[tuple[Any, ...]]]:
    """One hand-written query for the same due set (with each row's consent), timed with its fetch."""
    engine = create_engine(url)
    with engine.connect() as conn:
        tz = dict(conn.execute(select(Center.id, Center.timezone)).all())
        local = {cid: NOW.astimezone(ZoneInfo(name)).date() for cid, name in tz.items()}
        days = sorted({(d.month, d.day) for d in local.values()})

        def consent(purpose: str) -> Any:
            return (
                select(Consent.granted)
                .where(
                    Consent.customer_id == Customer.id, Consent.channel == "sms", Consent.purpose == purpose
                )
                .scalar_subquery()
            )

        person = (Customer.id, Customer.center_id, Customer.name, Customer.phone, Customer.birth_year)
        cols = (*person, consent("marketing" if scenario in ("birthday", "everyday") else "service"))
        service_cols = (*person, consent("service"))
        birthdays = or_(*[and_(Customer.birth_month == m, Customer.birth_day == d) for m, d in days])
        last_id = conn.scalar(select(func.max(Customer.id))) or 0
        started = time.perf_counter()
        rows: list[Any] = []
        if scenario == "fixed":
            rows += conn.execute(select(*cols).where(Customer.id.in_(storm_day.fixed_due_ids(last_id)))).all()
        else:
            rows += conn.execute(select(*cols).where(birthdays)).all()
            # The same local-day rule careflow applies (no Feb 29 on this date).
            rows = [r for r in rows if (local[r[1]].month, local[r[1]].day) in days]
        if scenario == "storm":  # the storm comes on top of the day's birthdays
            bj = select(Center.id).where(Center.code == "bj").scalar_subquery()
            rows += conn.execute(select(*cols).where(Customer.center_id == bj)).all()
        if scenario == "everyday":  # on top of the birthdays, what the other built-in plugins find due
            rows += _everyday_floor(conn, service_cols, local)
        seconds = time.perf_counter() - started
    engine.dispose()
    return seconds, [tuple(r) for r in rows]


def _everyday_floor(conn: Any, cols: tuple[Any, ...], local: dict[int, Any]) -> list[Any]:
    """The other built-in plugins' due sets at their default settings, one hand-written query each.

    Maintenance: one row per vehicle whose service is due within 7 days (or up to 3 days late),
    and one per vehicle whose warranty ends within 30 days; survey: one per customer who
    visited yesterday. Holidays and weather have nobody due on the bench's day (no holiday; the
    bench's alert file warns another city), so their floor is empty.
    """
    (today,) = set(local.values())  # the bench's centers share one local day
    vehicles = select(*cols).join(Vehicle, Vehicle.customer_id == Customer.id)
    rows: list[Any] = []
    rows += conn.execute(
        vehicles.where(Vehicle.next_service_due.between(today - timedelta(days=3), today + timedelta(days=7)))
    ).all()
    rows += conn.execute(
        vehicles.where(Vehicle.warranty_end.between(today, today + timedelta(days=30)))
    ).all()
    yesterday = today - timedelta(days=1)
    visited = select(ServiceVisit.customer_id).where(ServiceVisit.date == yesterday).distinct()
    rows += conn.execute(select(*cols).where(Customer.id.in_(visited), Customer.is_staff.is_(False))).all()
    return rows


def render_floor(config: Path, rows: Sequence[tuple[Any, ...]], environ: dict[str, str]) -> float:
    """Messages per second a bare loop renders with the same compiled template."""
    from careflow.testing import build_runtime

    runtime = build_runtime(load_settings(config, environ=environ), extra_plugins=[storm_day])
    name = runtime.templates.resolve("birthday", "sms", "zh_CN", "bj", "zh_CN")
    template = runtime.templates.env.get_template(name)
    sample = list(rows) or [(1, 1, "Customer 1", "+8613800000001", 1990, True)]
    count = max(len(sample), 20_000)
    started = time.perf_counter()
    for i in range(count):
        row = sample[i % len(sample)]
        template.render(
            customer={"name": row[2]},
            center={"name": "Anxin", "code": "bj", "help_text": ""},
            age=2026 - row[4] if row[4] else None,
            locale="zh_CN",
        )
    runtime.close()
    return count / (time.perf_counter() - started)


# ---------------------------------------------------------------- delivery


@contextmanager
def fake_twilio() -> Iterator[dict[str, str]]:
    """The Twilio-compatible test server as a process of its own, as a real API would be."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "careflow.testing.twilio_server", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    info: dict[str, str] = {"pid": str(proc.pid)}
    for line in proc.stdout:
        if "listening on" in line:
            info["url"] = line.split("listening on", 1)[1].strip()
        elif line.startswith(("account_sid:", "auth_token:")):
            key, value = line.split(":", 1)
            info[key] = value.strip()
        if len(info) == 4:
            break
    try:
        yield info
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def twilio_ceiling(twilio: dict[str, str], messages: int, threads: int = 4) -> float:
    """The test server's own ceiling: keep-alive HTTP clients posting messages, no SDK, database or broker."""
    import base64
    import http.client
    import urllib.parse

    where = urllib.parse.urlsplit(twilio["url"])
    token = base64.b64encode(f"{twilio['account_sid']}:{twilio['auth_token']}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/x-www-form-urlencoded"}
    body = urllib.parse.urlencode({"To": "+8613800000000", "From": "+15005550006", "Body": "ceiling"})
    path = f"/2010-04-01/Accounts/{twilio['account_sid']}/Messages.json"
    per_thread = max(1, messages // threads)

    def send() -> None:
        connection = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=10)
        for _ in range(per_thread):
            connection.request("POST", path, body, headers)
            response = connection.getresponse()
            response.read()
            if response.status != 201:
                raise RuntimeError(f"test server answered {response.status}")
        connection.close()

    pool = [threading.Thread(target=send) for _ in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return per_thread * threads / (time.perf_counter() - started)


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pids_named(*names: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                if entry.joinpath("comm").read_text().strip().startswith(names):
                    found.append(int(entry.name))
    return found


class CpuMeter:
    """CPU seconds each part of the delivery pipeline spends, over one measurement.

    Where the time goes, measured in the same run as the throughput: the worker processes,
    PostgreSQL (every server process: backends, WAL writer), the broker's server process
    and the Twilio-compatible test server. Linux only (/proc); elsewhere every figure is 0.
    """

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.before: dict[str, dict[int, float]] = {}

    def start(self) -> None:
        self.before = {name: {pid: _cpu_seconds(pid) for pid in pids()} for name, pids in self.groups.items()}

    def stop(self) -> dict[str, float]:
        used = {}
        for name, pids in self.groups.items():
            start = self.before.get(name, {})
            used[name] = sum(max(0.0, _cpu_seconds(pid) - start.get(pid, 0.0)) for pid in pids())
        return used


def measure_delivery(
    config: Path,
    url: str,
    twilio: dict[str, str],
    event_ids: list[int],
    workers: int,
    threads: int,
) -> tuple[float, dict[str, float]]:
    """Messages per second from enqueue to the last event recorded as sent, with ``workers``
    processes, and the CPU milliseconds per message each part of the pipeline spent meanwhile."""
    auth_token = twilio["auth_token"]
    from careflow.delivery.broker import make_broker
    from careflow.testing import build_runtime

    engine = create_engine(url)
    with engine.begin() as conn:  # the same events, fresh, for every worker count
        conn.execute(
            update(CareEvent)
            .where(CareEvent.id.in_(event_ids))
            .values(status=EventStatus.PLANNED, body=None, attempts=0, sent_at=None, provider_message_id=None)
        )
    if engine.dialect.name == "postgresql":
        # Each measurement rewrites the same rows: without this, every later one would pay
        # for the dead row versions of the earlier ones (autovacuum does this in production).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE care_events"))
    env = {**os.environ, "CAREFLOW_CONFIG": str(config), "CAREFLOW_TWILIO__AUTH_TOKEN": auth_token}
    logs = [config.with_suffix(f".worker{i}.log") for i in range(workers)]
    procs = []
    for log in logs:
        with log.open("wb") as sink:  # a file, not a pipe: a chatty worker must never block on it
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "careflow.cli", "worker", "--threads", str(threads)],
                    env=env,
                    stdout=sink,
                    stderr=sink,
                )
            )
    try:
        for proc, log in zip(procs, logs, strict=True):  # wait until each worker consumes
            deadline = time.monotonic() + 60
            while "careflow worker:" not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker did not start:\n{log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.1)
        runtime = build_runtime(load_settings(config, environ={"CAREFLOW_TWILIO__AUTH_TOKEN": auth_token}))
        broker = make_broker(runtime.settings.broker.url)
        from careflow.delivery.actors import build_actors

        actors = build_actors(broker, runtime)
        with engine.connect() as conn:
            failed_before = conn.scalar(
                select(func.count()).where(
                    CareEvent.id.between(min(event_ids), max(event_ids)),
                    CareEvent.status == EventStatus.FAILED,
                )
            )
        broker_process = "redis-server" if runtime.settings.broker.url.startswith("redis") else "beam.smp"
        meter = CpuMeter(
            {
                "workers": lambda: [proc.pid for proc in procs],
                "postgresql": lambda: _pids_named("postgres"),
                "broker": lambda: _pids_named(broker_process),
                "test server": lambda: [int(twilio["pid"])],
            }
        )
        meter.start()
        started = time.perf_counter()
        actors.enqueue_deliveries(event_ids)  # as the scheduler queues them: [delivery] batch_size
        lo, hi = min(event_ids), max(event_ids)
        while True:
            # Cheap enough not to weigh on the database being measured: an id range, not the ids.
            # (Events in the range but not measured are suppressed or failed: never reset, never sent.)
            with engine.connect() as conn:
                counts = dict(
                    conn.execute(
                        select(CareEvent.status, func.count())
                        .where(
                            CareEvent.id.between(lo, hi),
                            CareEvent.status.in_([EventStatus.SENT, EventStatus.FAILED]),
                        )
                        .group_by(CareEvent.status)
                    ).all()
                )
            done = counts.get(EventStatus.SENT, 0)
            if done >= len(event_ids):
                break
            if counts.get(EventStatus.FAILED, 0) > failed_before:
                raise RuntimeError(f"deliveries failed: {counts}; see 'careflow events --status failed'")
            if time.perf_counter() - started > 600:
                tail = logs[0].read_text(errors="replace")[-3000:]
                raise RuntimeError(f"only {done} of {len(event_ids)} sent after 600 s; worker log:\n{tail}")
            time.sleep(0.1)
        rate = len(event_ids) / (time.perf_counter() - started)
        cpu = {name: seconds * 1000 / len(event_ids) for name, seconds in meter.stop().items()}
        broker.close()
        runtime.close()
        return rate, cpu
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.unlink(missing_ok=True)
        engine.dispose()


def planned_ids(url: str, limit: int) -> list[int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        ids = list(
            conn.scalars(
                select(CareEvent.id)
                .where(CareEvent.status == EventStatus.PLANNED)
                .order_by(CareEvent.id)
                .limit(limit)
            )
        )
    engine.dispose()
    return ids


def clean_queue(broker_url: str, queue: str) -> None:
    if broker_url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(broker_url)
        keys = list(client.scan_iter(f"dramatiq:{queue}*"))
        if keys:
            client.delete(*keys)
    elif broker_url.startswith("amqp"):
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(broker_url))
        channel = connection.channel()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(name)
        connection.close()


# ---------------------------------------------------------------- the whole benchmark


def run(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    tag = f"_q{os.getpid()}" if args.quick else ""
    results: dict[str, Any] = {"command": " ".join(sys.argv), "planning": [], "delivery": [], "floors": {}}
    urls: dict[tuple[str, int], str] = {}
    print(f"careflow benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs", flush=True)
    try:
        for customers in args.sizes:
            for backend in args.backends:
                kind = "sqlite" if backend.startswith("sqlite") else "pg"
                url = urls.get((kind, customers)) or database_url(kind, customers, data_dir, tag)
                if (kind, customers) not in urls:
                    ensure_data(url, customers)
                    forget_segments(url)  # so the first run computes them, and the table shows it
                    urls[(kind, customers)] = url
                queue = f"careflow_bench_{uuid.uuid4().hex[:8]}"
                for scenario in args.scenarios:
                    config = write_config(data_dir, url, BACKENDS[backend], queue, scenario=scenario)
                    figures = measure_planning(config, url, BACKENDS[backend], queue, runs=args.plan_runs)
                    floor_s, rows = floor_rows(url, scenario)
                    clean_queue(BACKENDS[backend], queue)
                    if figures["plugins"] != sorted(DAY_PLUGINS[scenario]) or figures["failures"]:
                        raise RuntimeError(f"{scenario}: ran {figures['plugins']}: {figures['failures']}")
                    if figures["due"] != len(rows):  # otherwise the ratio compares different work
                        raise RuntimeError(
                            f"{scenario}: careflow found {figures['due']:,} due, the floor {len(rows):,}"
                        )
                    row = {
                        "backend": backend,
                        "customers": customers,
                        "scenario": scenario,
                        **figures,
                        "floor_seconds": floor_s,
                        "floor_rows": len(rows),
                        "ratio": figures["seconds"] / floor_s if floor_s else None,
                    }
                    results["planning"].append(row)
                    print(_planning_line(row), flush=True)
                    config.unlink()
        if args.delivery:
            deliver(args, results, urls, data_dir)
    finally:
        if args.quick:
            for url in urls.values():
                drop_database(url)
    return results


def deliver(
    args: argparse.Namespace, results: dict[str, Any], urls: dict[tuple[str, int], str], data_dir: Path
) -> None:
    """Delivery throughput on the smallest PostgreSQL data set's storm day."""
    customers = min(args.sizes)
    url = urls.get(("pg", customers))
    remote = [b for b in args.backends if b != "sqlite+local"]
    if url is None or not remote:
        return
    with fake_twilio() as twilio:
        config = write_config(data_dir, url, "local", "unused", scenario="storm", twilio=twilio)
        reset_events(url)
        from careflow.planning.plan import plan
        from careflow.testing import build_runtime

        secret = {"CAREFLOW_TWILIO__AUTH_TOKEN": twilio["auth_token"]}
        runtime = build_runtime(load_settings(config, environ=secret), extra_plugins=[storm_day])
        plan(runtime, now=NOW)  # recorded, not queued: each measurement queues them itself
        runtime.close()
        ids = planned_ids(url, args.messages)
        _, rows = floor_rows(url, "birthday", repeat=1)
        results["floors"]["render_per_second"] = render_floor(config, rows, secret)
        results["floors"]["twilio_server_per_second"] = twilio_ceiling(twilio, 4_000)
        print(
            f"\nfloors: bare render loop {results['floors']['render_per_second']:,.0f} msg/s; "
            "test server ceiling (4 keep-alive HTTP clients, no SDK/DB/broker) "
            f"{results['floors']['twilio_server_per_second']:,.0f} msg/s",
            flush=True,
        )
        config.unlink()
        for backend in remote:
            for batch in args.batch_sizes:
                # The one-event-per-message path is the baseline: measured at the most workers only.
                counts = args.workers if batch == max(args.batch_sizes) else [max(args.workers)]
                queue = f"careflow_bench_{uuid.uuid4().hex[:8]}"
                config = write_config(
                    data_dir,
                    url,
                    BACKENDS[backend],
                    queue,
                    scenario="birthday",
                    twilio=twilio,
                    delivery_batch=batch,
                )
                # Threads per worker: every count at the most workers, the first elsewhere; the
                # one-per-message baseline at the most threads.
                threads_at = {w: [args.threads[0]] for w in counts} | {max(counts): list(args.threads)}
                if batch != max(args.batch_sizes):
                    threads_at = {w: [max(args.threads)] for w in counts}
                try:
                    for workers, threads in ((w, t) for w in counts for t in threads_at[w]):
                        rate, cpu = measure_delivery(config, url, twilio, ids, workers, threads)
                        row = {
                            "backend": backend,
                            "batch": batch,
                            "workers": workers,
                            "threads": threads,
                            "messages": len(ids),
                            "per_second": rate,
                            "cpu_ms_per_message": cpu,
                        }
                        results["delivery"].append(row)
                        print(
                            f"delivery {backend:<12} {batch:>3} event(s)/message, {workers} worker(s) x "
                            f"{threads} threads: {len(ids):,} messages at {rate:,.0f} msg/s; CPU ms/msg "
                            + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
                            + f" (sum {sum(cpu.values()):.2f})",
                            flush=True,
                        )
                finally:
                    clean_queue(BACKENDS[backend], queue)
                    config.unlink()


def _planning_line(row: dict[str, Any]) -> str:
    runs = "/".join(f"{s:.2f}" for s in row.get("all_seconds", [row["seconds"]]))
    return (
        f"planning {row['backend']:<12} {row['customers']:>9,} customers {row['scenario']:<8} "
        f"{row['new']:>7,} events in {row['seconds']:7.2f} s (best of {runs}; pre-planning "
        f"{row.get('prepare_seconds', 0):.2f} s) "
        f"({row['new'] / max(row['seconds'], 1e-9):>8,.0f}/s, "
        f"{row['batches']} windows), peak {row['peak_mb']:.0f} MB; floor {row['floor_seconds']:.3f} s "
        f"({row['floor_rows']:,} rows): {row['ratio']:.1f}x, "
        f"{_plan_ratio(row):.1f}x without pre-planning"
    )


def _plan_ratio(row: dict[str, Any]) -> float:
    """careflow's ratio to the floor without the once-per-run pre-planning step."""
    return (row["seconds"] - row.get("prepare_seconds", 0)) / max(row["floor_seconds"], 1e-9)


def table(results: dict[str, Any]) -> str:
    """Markdown tables of the results (printed, and pasted into docs/benchmarks.md)."""
    lines = [
        "| backend | customers | day | events | planning s | of which pre-planning s | events/s | peak MB "
        "| SQL floor s | ratio | ratio without pre-planning |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    refresh = []
    databases: set[tuple[str, int]] = set()  # PostgreSQL + Redis and + RabbitMQ share a database
    for r in results["planning"]:
        database = (r["backend"].split("+")[0], r["customers"])
        first_there = database not in databases
        databases.add(database)
        if first_there and r["scenario"] == SCENARIOS[0] and len(r.get("all_seconds", [])) > 1:
            # The day's first run (the first scenario's first) also computed every center's
            # segments, which later runs that day reuse: its extra time is that computation.
            extra = r["all_seconds"][0] - min(r["all_seconds"][1:])
            refresh.append(f"{r['backend']} {r['customers']:,}: {extra:.1f} s")
        lines.append(
            f"| {r['backend']} | {r['customers']:,} | {r['scenario']} | {r['new']:,} | {r['seconds']:.2f} | "
            f"{r.get('prepare_seconds', 0):.2f} | {r['new'] / max(r['seconds'], 1e-9):,.0f} | "
            f"{r['peak_mb']:.0f} | {r['floor_seconds']:.3f} | {r['ratio']:.1f}x | {_plan_ratio(r):.1f}x |"
        )
    if refresh:
        lines += [
            "",
            "Segments computed by the day's first run (once per center and day): " + "; ".join(refresh),
        ]
    if results["delivery"]:
        lines += [
            "",
            "| broker | events per message | workers x threads | messages | msg/s | vs. 1 per message "
            "| CPU ms/msg: workers | PostgreSQL | broker | test server | sum | CPU-bound ceiling msg/s |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        cores = os.cpu_count() or 1
        baseline = {
            (d["backend"], d["workers"]): d["per_second"]
            for d in results["delivery"]
            if d.get("batch", 1) == 1
        }
        for d in results["delivery"]:
            base = baseline.get((d["backend"], d["workers"]))
            ratio = f"{d['per_second'] / base:.1f}x" if base else "-"
            cpu = d.get("cpu_ms_per_message", {})
            parts = [cpu.get(k, 0.0) for k in ("workers", "postgresql", "broker", "test server")]
            total = sum(parts)
            ceiling = f"{cores * 1000 / total:,.0f}" if total else "-"
            lines.append(
                f"| {d['backend']} | {d.get('batch', 1)} | {d['workers']} x {d['threads']} "
                f"| {d['messages']:,} | {d['per_second']:,.0f} | {ratio} | "
                + " | ".join(f"{v:.2f}" for v in parts)
                + f" | {total:.2f} | {ceiling} |"
            )
    floors = results["floors"]
    if floors:
        lines += [
            "",
            f"Bare render loop: {floors['render_per_second']:,.0f} msg/s. "
            "Test server ceiling (4 keep-alive HTTP clients; no SDK, database or broker): "
            f"{floors['twilio_server_per_second']:,.0f} msg/s.",
        ]
    return "\n".join(lines)


def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Several saved runs as one result (later runs' floors win)."""
    combined: dict[str, Any] = {
        "command": [p["command"] for p in parts],
        "planning": [],
        "delivery": [],
        "floors": {},
    }
    for part in parts:
        combined["planning"] += part["planning"]
        combined["delivery"] += part["delivery"]
        combined["floors"].update(part["floors"])
    return combined


def plot(results: dict[str, Any], path: Path) -> None:
    """Planning time against customers, one panel per day: careflow (solid) and its SQL floor (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [d for d in SCENARIOS if any(r["scenario"] == d for r in results["planning"])]
    fig, axes = plt.subplots(1, len(days), figsize=(4 * len(days), 4.5), squeeze=False, sharey=True)
    colours = {backend: f"C{i}" for i, backend in enumerate(BACKENDS)}
    titles = {
        "birthday": "birthday (0.26% due)",
        "storm": "storm (20% due)",
        "fixed": "fixed (300 due at any N)",
        "everyday": "everyday (all narrowing plugins)",
    }
    for ax, day in zip(axes[0], days, strict=True):
        for backend, colour in colours.items():
            rows = sorted(
                (r for r in results["planning"] if r["scenario"] == day and r["backend"] == backend),
                key=lambda r: r["customers"],
            )
            if not rows:
                continue
            xs = [r["customers"] for r in rows]
            ax.plot(xs, [r["seconds"] for r in rows], marker="o", color=colour, label=f"careflow {backend}")
            ax.plot(
                xs, [r["floor_seconds"] for r in rows], ls="--", color=colour, label=f"SQL floor {backend}"
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("customers")
        ax.set_title(titles.get(day, day), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("planning time (s), best of 3")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("careflow planning against customers, and the hand-written SQL floor")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_plan"]:
        plan_child(Path(argv[1]))
        return
    parser = argparse.ArgumentParser(description="careflow benchmark against the floor")
    parser.add_argument("--quick", action="store_true", help="small N for CI; asserts nothing about time")
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100_000, 1_000_000]
    )
    parser.add_argument("--backends", type=lambda s: s.split(","), default=list(BACKENDS))
    parser.add_argument("--scenarios", type=lambda s: s.split(","), default=list(SCENARIOS))
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    parser.add_argument(
        "--threads",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[2, 8],
        help="threads per worker process: the first at every worker count, all of them at the most",
    )
    parser.add_argument(
        "--batch-sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 50],
        help="[delivery] batch_size values; the largest at every worker count, the others at the most",
    )
    parser.add_argument("--messages", type=int, default=6_000, help="messages per delivery measurement")
    parser.add_argument("--no-delivery", dest="delivery", action="store_false")
    parser.add_argument(
        "--plan-runs", type=int, default=PLAN_RUNS, help="fresh-process plans per day; the best is reported"
    )
    parser.add_argument("--data-dir", default="/tmp/careflow-bench")
    parser.add_argument("--json-out", type=Path, help="write the raw results here")
    parser.add_argument("--plot", type=Path, help="write a PNG of planning time against customers")
    parser.add_argument("--report", type=Path, nargs="+", help="only combine saved --json-out files")
    args = parser.parse_args(argv)
    if args.report:
        results = combine([json.loads(path.read_text()) for path in args.report])
        print(table(results))
        if args.plot:
            plot(results, args.plot)
        return
    unknown = set(args.backends) - set(BACKENDS) or set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown {sorted(unknown)}: backends are {list(BACKENDS)}, scenarios {list(SCENARIOS)}")
    if args.quick:
        args.sizes, args.workers, args.messages = [3_000], [1, 2], 300
    results = run(args)
    print("\n" + table(results))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))
    if args.plot:
        plot(results, args.plot)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
