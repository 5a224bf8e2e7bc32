"""The new commands as a user runs them: `careflow serve` and `careflow templates lint`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from careflow.config import load_settings
from careflow.testing import add_customer, build_runtime
from careflow.testing.twilio_server import FakeTwilio
from tests.policy_support import consents, inbound


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config(tmp_path: Path, fake: FakeTwilio, port: int, template_dir: Path | None = None) -> Path:
    path = tmp_path / "careflow.toml"
    extra = f'[templates]\ndir = "{template_dir}"\n' if template_dir else ""
    path.write_text(
        f"""
[database]
url = "sqlite:///{tmp_path / "c.db"}"
[channels.sms]
provider = "twilio"
[twilio]
account_sid = "{fake.account_sid}"
from_number = "+15005550006"
base_url = "{fake.url}"
[web]
port = {port}
public_url = "http://127.0.0.1:{port}"
[centers.main]
name = "Anxin Auto"
[plugins.birthday]
enabled = true
{extra}""",
        encoding="utf-8",
    )
    return path


def test_careflow_serve_verifies_and_applies_an_inbound_stop(tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    port = free_port()
    path = config(tmp_path, fake_twilio, port)
    secret = {"CAREFLOW_TWILIO__AUTH_TOKEN": fake_twilio.auth_token}
    runtime = build_runtime(load_settings(path, environ=secret))
    with runtime.sessions.begin() as session:
        customer_id = add_customer(session, external_id="A", phone="+8613800000001").id
    env = {**os.environ, "CAREFLOW_CONFIG": str(path), **secret}
    server = subprocess.Popen(
        [sys.executable, "-m", "careflow.cli", "serve"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1) as response:
                    assert response.read() == b"ok"
                    break
            except OSError:
                assert time.monotonic() < deadline, "careflow serve did not start"
                time.sleep(0.1)
        assert inbound(base, "not-the-token", "+8613800000001", "STOP", "SM1")[0] == 403
        assert consents(runtime, customer_id)[("sms", "marketing")] is True
        assert inbound(base, fake_twilio.auth_token, "+8613800000001", "STOP", "SM2")[0] == 200
        assert consents(runtime, customer_id)[("sms", "marketing")] is False
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=20)
        runtime.close()
    assert "+8613800000001" not in stderr


def test_templates_lint_command_exit_status_and_json(tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    env = {**os.environ, "CAREFLOW_TWILIO__AUTH_TOKEN": fake_twilio.auth_token}
    good = config(tmp_path, fake_twilio, 8000)
    build_runtime(load_settings(good, environ=env)).close()
    ok = subprocess.run(
        [sys.executable, "-m", "careflow.cli", "templates", "lint"],
        env={**env, "CAREFLOW_CONFIG": str(good)},
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "all templates pass lint" in ok.stdout

    broken = tmp_path / "tpl" / "birthday"
    broken.mkdir(parents=True)
    (broken / "sms.en.j2").write_text("Hi {{ customer.nmae }}\n{{ voucher }}", "utf-8")
    bad = config(tmp_path, fake_twilio, 8000, template_dir=tmp_path / "tpl")
    result = subprocess.run(
        [sys.executable, "-m", "careflow.cli", "templates", "lint", "--json"],
        env={**env, "CAREFLOW_CONFIG": str(bad)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    findings = [json.loads(line) for line in result.stdout.splitlines()]
    assert findings == [
        {
            "template": "birthday/sms.en.j2",
            "line": 2,
            "severity": "error",
            "kind": "undefined-variable",
            "message": findings[0]["message"],
        }
    ]
    assert "'voucher' is not a template variable" in findings[0]["message"]
