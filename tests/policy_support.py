"""Helpers for the policy and webhook tests: a Twilio-backed runtime and a real HTTP server."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from careflow.runtime import Runtime
from careflow.storage.models import CareEvent, Consent
from careflow.testing import build_runtime, make_settings
from careflow.testing.twilio_server import FakeTwilio
from careflow.web.app import create_app

SENDER = "+15005550006"


def twilio_runtime(
    db_url: str,
    twilio: FakeTwilio,
    *,
    center: dict[str, Any] | None = None,
    extra_plugins: Iterable[object] = (),
    plugins: dict[str, Any] | None = None,
    **sections: Any,
) -> Runtime:
    """A migrated runtime sending SMS through the real Twilio SDK to ``twilio``."""
    settings = make_settings(
        db_url,
        channels={"sms": {"provider": "twilio"}},
        twilio={
            "account_sid": twilio.account_sid,
            "auth_token": twilio.auth_token,
            "from_number": SENDER,
            "base_url": twilio.url,
            "timeout_seconds": 2.0,
            "messages_per_second": 0,
        },
        centers={
            "main": {
                "name": "Anxin Auto",
                "timezone": "Asia/Shanghai",
                "locale": "zh_CN",
                # careflow's own default window, which these policy tests are about.
                "send_from": "09:00",
                "send_until": "20:00",
                **(center or {}),
            }
        },
        delivery={"max_attempts": 3, "min_backoff_ms": 20, "max_backoff_ms": 200},
        plugins=plugins if plugins is not None else {"birthday": {"enabled": True}},
        **sections,
    )
    return build_runtime(settings, extra_plugins=extra_plugins)


@contextmanager
def serving(runtime: Runtime) -> Iterator[str]:
    """The careflow web app under uvicorn on a loopback port; sets ``[web] public_url`` to it."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime), host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    runtime.settings.web.public_url = url
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def post(
    url: str, params: dict[str, str], *, signature: str | None = None, raw: bytes | None = None
) -> tuple[int, str]:
    """POST a form like Twilio does; returns (status, body) also for error statuses."""
    data = raw if raw is not None else urllib.parse.urlencode(params).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def signed_post(url: str, params: dict[str, str], token: str) -> tuple[int, str]:
    return post(url, params, signature=RequestValidator(token).compute_signature(url, params))


def inbound(base: str, token: str, phone: str, body: str, sid: str) -> tuple[int, str]:
    """A customer's text arriving, signed as Twilio signs it."""
    params = {"MessageSid": sid, "From": phone, "To": SENDER, "Body": body, "AccountSid": "AC1"}
    return signed_post(f"{base}/webhooks/twilio/inbound", params, token)


def consents(runtime: Runtime, customer_id: int) -> dict[tuple[str, str], bool]:
    with runtime.sessions() as session:
        rows = session.scalars(select(Consent).where(Consent.customer_id == customer_id))
        return {(c.channel, c.purpose): c.granted for c in rows}


def events(runtime: Runtime) -> list[CareEvent]:
    with runtime.sessions() as session:
        return list(session.scalars(select(CareEvent).order_by(CareEvent.id)))
