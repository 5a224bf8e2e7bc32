"""Bodies nobody is entitled to send are refused while they stream, never buffered whole.

Each test streams a body far over the endpoint's limit into the ASGI app of ``careflow serve``
and counts the bytes the app pulled: a refused body is read at most one chunk past the limit
(and not at all when the endpoint needs no body, or when Content-Length already says too much).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.types import Message

from careflow.rendering.unsubscribe_links import make_token, secret_key
from careflow.web.app import create_app
from careflow.web.body_limit import SMALL_FORM_BYTES
from careflow.web.console.security import LOGIN_COOKIE, SESSION_COOKIE
from careflow.web.console.views_ops import IMPORT_UPLOAD_BYTES
from careflow.web.webhooks import MAX_BODY_BYTES
from tests.web.conftest import World, sign_in

CHUNK = 64 * 1024
HUGE = 50 * 1024 * 1024
BOUNDARY = "careflowboundary"


class Body:
    """A client body sent in chunks, as a chunked upload is; counts the bytes the app took."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._next: bytes | None = next(self._chunks, None)
        self.taken = 0

    async def receive(self) -> Message:
        if self._next is None:
            await asyncio.sleep(3600)  # a client that sent everything waits for the answer
        chunk, self._next = self._next or b"", next(self._chunks, None)
        self.taken += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": self._next is not None}


def filler(total: int, head: bytes = b"") -> Iterator[bytes]:
    yield head
    block = b"a" * CHUNK
    for _ in range(total // CHUNK):
        yield block


def post(app: Starlette, path: str, body: Body, headers: dict[str, str]) -> int:
    """POST through the ASGI interface; the response status."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("203.0.113.9", 40000),
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(asyncio.wait_for(app(scope, body.receive, send), timeout=60))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return int(start["status"])


@pytest.fixture
def app(world: World) -> Starlette:
    world.runtime.settings.twilio.auth_token = "twilio-token"  # type: ignore[assignment]
    return create_app(world.runtime)


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_a_huge_webhook_post_with_a_bogus_signature_is_refused_while_streaming(app: Starlette) -> None:
    body = Body(filler(HUGE))
    status = post(app, "/webhooks/twilio/inbound", body, {**FORM, "X-Twilio-Signature": "bogus"})
    assert status == 413
    assert body.taken <= MAX_BODY_BYTES + CHUNK


def test_a_declared_length_over_the_limit_is_refused_before_reading(app: Starlette) -> None:
    body = Body(filler(HUGE))
    headers = {**FORM, "X-Twilio-Signature": "bogus", "Content-Length": str(400 * 1024 * 1024)}
    assert post(app, "/webhooks/twilio/status", body, headers) == 413
    assert body.taken == 0


def test_the_sign_in_form_reads_at_most_a_few_kilobytes(app: Starlette) -> None:
    with TestClient(app, base_url="http://testserver") as client:
        client.get("/console/login")
        login_cookie = client.cookies[LOGIN_COOKIE]
    body = Body(filler(HUGE, b"email=a%40b.example&password="))
    status = post(app, "/console/login", body, {**FORM, "Cookie": f"{LOGIN_COOKIE}={login_cookie}"})
    assert status == 413
    assert body.taken <= SMALL_FORM_BYTES + CHUNK


def upload(total: int) -> Iterator[bytes]:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="c.csv"\r\n'
        "Content-Type: text/csv\r\n\r\nexternal_id,name\r\n"
    ).encode()
    yield from filler(total, head)


MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def test_a_console_post_without_a_signed_in_session_is_not_read_at_all(app: Starlette) -> None:
    body = Body(upload(HUGE))
    forged = {"Cookie": f"{SESSION_COOKIE}=forged.0"}
    status = post(app, "/console/customers/import", body, {**MULTIPART, **forged})
    assert status == 303  # to the sign-in page
    assert body.taken == 0


def test_the_csv_upload_of_a_signed_in_user_stops_at_its_documented_limit(
    app: Starlette, world: World
) -> None:
    with TestClient(app, base_url="http://testserver/console", follow_redirects=False) as client:
        sign_in(client, "admin@example.com")
        session_cookie = client.cookies[SESSION_COOKIE]
    body = Body(upload(IMPORT_UPLOAD_BYTES + 4 * CHUNK))
    cookie = {"Cookie": f"{SESSION_COOKIE}={session_cookie}"}
    status = post(app, "/console/customers/import", body, {**MULTIPART, **cookie})
    assert status == 413
    assert body.taken <= IMPORT_UPLOAD_BYTES + CHUNK


def test_one_click_unsubscribe_never_reads_the_body(app: Starlette, world: World) -> None:
    key = secret_key(world.runtime.settings)
    assert key is not None
    token = make_token(key, world.north_customer, "email")
    body = Body(filler(HUGE, b"List-Unsubscribe=One-Click"))
    assert post(app, f"/unsubscribe/{token}", body, FORM) == 200
    assert body.taken == 0
