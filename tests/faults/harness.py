"""A small production on one machine: real brokers, real `careflow worker`/`scheduler` processes,
the real Twilio SDK against FakeTwilio, whose log is the judge of what was sent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from careflow.config import load_settings
from careflow.runtime import Runtime
from careflow.storage.models import CareEvent, Center, Consent, Customer
from careflow.testing import build_runtime, parse_instant
from careflow.testing.twilio_server import FakeTwilio

NOW = parse_instant("2026-05-11T10:00:00+08:00")
SENDER = "+15005550006"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], Any], *, timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class RedisServer:
    """A Redis of the test's own (other tests share the machine's 6379): no persistence, like CI."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10
        )

    def answers(self) -> bool:
        return self._cli("ping").stdout.strip() == "PONG"

    def start(self) -> None:
        subprocess.run(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "yes",
                "--dir", str(self.directory),
                "--logfile", str(self.directory / f"redis-{self.port}.log"),
            ],
            check=True,
            timeout=10,
        )  # fmt: skip
        wait_until(self.answers, timeout=10, what=f"redis on {self.port}")

    def stop(self) -> None:
        """SHUTDOWN NOSAVE: everything queued in it is gone, as after a crash without persistence."""
        self._cli("shutdown", "nosave")
        wait_until(lambda: not self.answers(), timeout=10, what=f"redis on {self.port} to stop")


class RabbitVhost:
    """A RabbitMQ virtual host of the test's own on the shared node, so closing its connections
    (what clients see when the broker restarts) disturbs no other test."""

    def __init__(self) -> None:
        self.name = f"careflow_t_{uuid.uuid4().hex[:10]}"
        self.url = f"amqp://guest:guest@127.0.0.1:5672/{self.name}"

    @staticmethod
    def ctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)

    def create(self) -> None:
        self.ctl("add_vhost", self.name)
        self.ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")

    def drop_connections(self) -> None:
        self.ctl("close_all_connections", "--vhost", self.name, "careflow fault test: broker restart")

    def delete(self) -> None:
        self.ctl("delete_vhost", self.name)


@dataclass
class Deployment:
    """careflow.toml, a FakeTwilio and the processes of one scenario."""

    directory: Path
    twilio: FakeTwilio
    db_url: str
    broker_url: str
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sections: dict[str, dict[str, Any]] = {
            "database": {"url": self.db_url},
            "broker": {
                "url": self.broker_url,
                "queue": f"careflow_t_{uuid.uuid4().hex[:10]}",
                "worker_threads": 4,
                "heartbeat_timeout_ms": 2000,
                "maintenance_chance": 1_000_000,
            },
            "channels.sms": {"provider": "twilio"},
            "twilio": {
                "account_sid": self.twilio.account_sid,
                "from_number": SENDER,
                "base_url": self.twilio.url,
                "timeout_seconds": 2.0,
                # Thousands of events in seconds: the sender's rate limit is tested on its own
                # (tests/faults/test_rate_limit.py); here it would only slow the scenarios down.
                "messages_per_second": 0,
            },
            "centers.main": {
                "name": "Anxin Auto",
                "timezone": "Asia/Shanghai",
                "locale": "zh_CN",
                # Scenarios run at whatever time CI does; quiet hours have their own tests.
                "send_from": "00:00",
                "send_until": "24:00",
            },
            "delivery": {
                "max_attempts": 6,
                "min_backoff_ms": 100,
                "max_backoff_ms": 1000,
                "time_limit_ms": 2500,
            },
            "scheduler": {"tick_seconds": 0.5, "lease_seconds": 3, "requeue_after_seconds": 8},
            "plugins.birthday": {"enabled": True},
        }
        for name, values in self.settings.items():
            sections.setdefault(name, {}).update(values)
        self.settings = sections
        self.config = self.directory / "careflow.toml"
        lines = []
        for name, values in sections.items():
            lines.append(f"[{name}]")
            lines.extend(f"{key} = {_toml(value)}" for key, value in values.items())
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.env = {
            **os.environ,
            "CAREFLOW_CONFIG": str(self.config),
            "CAREFLOW_TWILIO__AUTH_TOKEN": self.twilio.auth_token,
        }

    @contextmanager
    def runtime(self) -> Iterator[Runtime]:
        settings = load_settings(self.config, environ={"CAREFLOW_TWILIO__AUTH_TOKEN": self.twilio.auth_token})
        runtime = build_runtime(settings)
        try:
            yield runtime
        finally:
            runtime.close()

    def log(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``careflow -v ARGS`` with its output in ``<name>.log`` (a pipe could fill and block it)."""
        with self.log(name).open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "careflow.cli", "-v", *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.processes[name] = proc
        return proc

    def worker(self, name: str = "worker", threads: int = 4) -> subprocess.Popen[bytes]:
        return self.start(name, "worker", "--threads", str(threads))

    def scheduler(self, name: str = "scheduler") -> subprocess.Popen[bytes]:
        return self.start(name, "scheduler", "--holder", name)

    def kill9(self, name: str) -> None:
        proc = self.processes[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def log_lines(self, name: str, needle: str) -> list[str]:
        text = self.log(name).read_text(encoding="utf-8", errors="replace") if self.log(name).exists() else ""
        return [line for line in text.splitlines() if needle in line]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def seed_birthdays(runtime: Runtime, count: int, *, birthday: tuple[int, int] = (5, 11)) -> list[str]:
    """``count`` customers with SMS consent born on ``birthday`` (NOW's local day); returns their phones."""
    with runtime.sessions.begin() as session:
        center_id = session.scalar(select(Center.id).where(Center.code == "main"))
        first = session.scalar(select(func.coalesce(func.max(Customer.id), 0))) + 1
        phones = [f"+86139{i:08d}" for i in range(count)]
        session.execute(
            insert(Customer),
            [
                {
                    "id": first + i,
                    "center_id": center_id,
                    "external_id": f"F{i:05d}",
                    "name": f"客户{i}",
                    "phone": phone,
                    "birth_year": 1990,
                    "birth_month": birthday[0],
                    "birth_day": birthday[1],
                    "locale": "zh_CN",
                }
                for i, phone in enumerate(phones)
            ],
        )
        for purpose in ("service", "marketing"):
            session.execute(
                insert(Consent),
                [
                    {
                        "customer_id": first + i,
                        "channel": "sms",
                        "purpose": purpose,
                        "granted": True,
                        "source": "test",
                    }
                    for i in range(count)
                ],
            )
    return phones


def statuses(runtime: Runtime) -> Counter[str]:
    with runtime.sessions() as session:
        return Counter(
            dict(session.execute(select(CareEvent.status, func.count()).group_by(CareEvent.status)).all())
        )  # type: ignore[arg-type]


def all_final(runtime: Runtime, expected: int) -> Counter[str] | None:
    counts = statuses(runtime)
    if sum(counts.values()) == expected and not counts["planned"] and not counts["sending"]:
        return counts
    return None


def assert_sent_exactly_once(runtime: Runtime, twilio: FakeTwilio, phones: list[str]) -> None:
    """The judge: one accepted message per recipient at the provider, and the outbox agrees."""
    per_recipient = Counter(m.to for m in twilio.messages)
    doubled = {to: n for to, n in per_recipient.items() if n > 1}
    assert not doubled, f"sent more than once: {doubled}"
    assert set(per_recipient) == set(phones), f"never sent: {sorted(set(phones) - set(per_recipient))[:10]}"
    assert len(twilio.messages) == len(phones)
    with runtime.sessions() as session:
        rows = session.execute(
            select(CareEvent.recipient, CareEvent.status, CareEvent.provider_message_id)
        ).all()
    assert Counter(r.status for r in rows) == {"sent": len(phones)}
    by_recipient = {m.to: m.sid for m in twilio.messages}
    assert {r.recipient: r.provider_message_id for r in rows} == by_recipient
