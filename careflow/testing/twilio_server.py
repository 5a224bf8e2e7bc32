"""A local, Twilio-compatible Messages API for tests, benchmarks and demos.

Careflow talks to Twilio through the official SDK.  Pointing that SDK at this
server (``client.api.base_url = fake.url``) lets tests exercise the real client
code path -- auth, form encoding, error parsing, pagination -- without a
network, without credentials and without ever sending a real message.  Faults
(HTTP errors, Twilio error codes, hangs, "sent but reply lost") can be
injected so retry and idempotency logic can be tested deterministically.

Only the standard library is used so the module can run anywhere the tests
run, including ``python -m careflow.testing.twilio_server`` for demos.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import hmac
import json
import re
import secrets
import signal
import socket
import threading
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Final, cast

__all__ = [
    "DEFAULT_ACCOUNT_SID",
    "DEFAULT_AUTH_TOKEN",
    "CreateRequest",
    "FakeTwilio",
    "Fault",
    "RecordedMessage",
    "main",
]

DEFAULT_ACCOUNT_SID: Final = "AC" + "fa4e" * 8
DEFAULT_AUTH_TOKEN: Final = "test-auth-token"
API_VERSION: Final = "2010-04-01"

_MAX_BODY_BYTES: Final = 1024 * 1024
_MAX_MESSAGE_CHARS: Final = 1600
_DEFAULT_PAGE_SIZE: Final = 50
_MAX_PAGE_SIZE: Final = 1000

_ACCOUNT_RE: Final = r"(?P<account>[^/]+)"
_LIST_PATH: Final = re.compile(rf"^/{API_VERSION}/Accounts/{_ACCOUNT_RE}/Messages\.json$")
_ITEM_PATH: Final = re.compile(rf"^/{API_VERSION}/Accounts/{_ACCOUNT_RE}/Messages/(?P<sid>[^/]+)\.json$")

# The Twilio error code normally paired with an HTTP status, used when a Fault
# does not name one, so the SDK still raises with a realistic ``.code``.
_DEFAULT_CODES: Final[dict[int, int]] = {
    400: 21211,
    401: 20003,
    403: 20403,
    404: 20404,
    405: 20004,
    429: 20429,
    500: 20500,
    502: 20500,
    503: 20503,
}

# GSM 03.38 basic and extension tables, to report num_segments the way Twilio does.
_GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED: Final = frozenset("\f^{}\\[~]|€")
_FAILED_STATUSES: Final = frozenset({"failed", "undelivered"})
# Statuses of a message still in Twilio's queue, not yet handed to a carrier (no date_sent).
_WAITING_STATUSES: Final = frozenset({"queued", "accepted", "scheduled"})


@dataclass
class RecordedMessage:
    """One message the server accepted; what a test asserts on."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    status: str
    status_callback: str | None
    date_created: datetime
    content_sid: str | None
    content_variables: str | None
    # When Twilio handed it to the carrier; None while it waits in Twilio's queue, where no
    # DateSent filter finds it.
    date_sent: datetime | None = None


@dataclass(frozen=True)
class CreateRequest:
    """One create request as it arrived, faulted or not: when, to whom, and the HTTP answer."""

    at: datetime
    to: str
    status: int


@dataclass
class Fault:
    """What the server does with one create request instead of accepting it.

    ``code`` defaults to the Twilio code usually paired with ``status`` (e.g.
    500 -> 20500, 429 -> 20429).  A ``status`` below 400 means "accept and
    answer normally, but only after ``hang_seconds``" (a slow success); the
    message is then always recorded.
    """

    status: int = 500
    code: int | None = None
    message: str = "injected fault"
    hang_seconds: float = 0.0
    record: bool = False
    retry_after: float | None = None  # sent as a Retry-After header (seconds), as on a real 429

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"Fault.status must be an HTTP status, got {self.status}")
        if self.hang_seconds < 0:
            raise ValueError("Fault.hang_seconds must not be negative")


# The fake's own table of what Smart Encoding rewrites (a sample of Twilio's, enough for tests).
_SMART_ENCODING = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
        "\u2013": "-", "\u2014": "-", "\u2026": "...", "\u00a0": " ", "\u2009": " ",
    }
)  # fmt: skip


def _smart_encoded(body: str) -> str:
    rewritten = body.translate(_SMART_ENCODING)
    return rewritten if rewritten.isascii() else body


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _rfc2822(moment: datetime) -> str:
    """Format like Twilio does: 'Mon, 23 Nov 2026 10:00:00 +0000'."""
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0))


def _num_segments(body: str) -> int:
    """Count SMS segments (GSM-7: 160/153 septets, otherwise UCS-2: 70/67 units)."""
    if not body:
        return 1
    if all(ch in _GSM7_BASIC or ch in _GSM7_EXTENDED for ch in body):
        units = sum(2 if ch in _GSM7_EXTENDED else 1 for ch in body)
        single, multi = 160, 153
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if units <= single else -(-units // multi)


def _signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """X-Twilio-Signature: base64(HMAC-SHA1(token, url + sorted key/value pairs)).

    Same algorithm as ``twilio.request_validator.RequestValidator.compute_signature``,
    reimplemented so the module needs only the standard library.
    """
    payload = url + "".join(name + params[name] for name in sorted(params))
    mac = hmac.new(auth_token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


class _DateFilter:
    """One DateSent / DateSent> / DateSent< filter value.

    The SDK sends ``YYYY-MM-DDTHH:MM:SSZ`` (``serialize.iso8601_datetime``)
    while Twilio's docs and raw HTTP callers use ``YYYY-MM-DD``; both are
    accepted.  Bounds are inclusive, as Twilio documents (">=", "<=").
    """

    def __init__(self, raw: str) -> None:
        text = raw.strip()
        if text[:2] in (">=", "<="):
            text = text[2:]
        self.day: date | None = None
        self.moment: datetime | None = None
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            self.day = date.fromisoformat(text)
        else:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            self.moment = parsed.astimezone(UTC)

    def same_day(self, sent: datetime) -> bool:
        """Exact DateSent means "sent on that UTC day", even if a time was given."""
        day = self.day if self.day is not None else cast(datetime, self.moment).date()
        return sent.astimezone(UTC).date() == day

    def compare(self, sent: datetime) -> int:
        """-1, 0 or 1 as ``sent`` is before, at or after this value (second precision)."""
        sent = sent.astimezone(UTC).replace(microsecond=0)
        if self.day is not None:
            day = sent.date()
            return (day > self.day) - (day < self.day)
        assert self.moment is not None
        return (sent > self.moment) - (sent < self.moment)


class _HTTPError(Exception):
    """Raised inside request handling to answer with Twilio's error JSON."""

    def __init__(
        self, status: int, code: int | None, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its FakeTwilio and its open connections."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # many workers connect at once; the default backlog of 5 resets some

    def __init__(self, address: tuple[str, int], fake: FakeTwilio, ipv6: bool) -> None:
        self.address_family = socket.AF_INET6 if ipv6 else socket.AF_INET
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay silent: clients that time out and hang up are expected here."""


class _Handler(BaseHTTPRequestHandler):
    """Routes the few Messages endpoints; everything else is a Twilio-style 404."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeTwilio/1.0"
    sys_version = ""
    timeout = 60  # idle keep-alive connections do not pin a thread forever

    @property
    def _fake(self) -> FakeTwilio:
        return cast(_Server, self.server).fake

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as two writes; with Nagle's algorithm the second waits for
        # the client's delayed ACK (~40 ms), capping a keep-alive connection at ~25 requests/s.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server = cast(_Server, self.server)
        with server.connections_lock:
            server.connections.add(self.connection)

    def finish(self) -> None:
        server = cast(_Server, self.server)
        with server.connections_lock:
            server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Never log: request lines and bodies may carry phone numbers and tokens."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        extra: dict[str, str] = {}
        try:
            body = self._read_body()
            status, payload = self._fake._handle(method, self.path, self.headers.get("Authorization"), body)
        except _HTTPError as err:
            status, payload = err.status, _error_payload(err.status, err.code, err.message)
            extra = err.headers
        except Exception:  # a bug in the fake must not look like a hung Twilio
            status, payload = 500, _error_payload(500, 20500, "Internal server error in FakeTwilio")
        self._send_json(status, payload, extra)

    def _read_body(self) -> bytes:
        length_header = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise _HTTPError(411, None, "Chunked request bodies are not supported")
        try:
            length = int(length_header) if length_header else 0
        except ValueError:
            self.close_connection = True
            raise _HTTPError(400, None, "Invalid Content-Length") from None
        if length < 0 or length > _MAX_BODY_BYTES:
            self.close_connection = True
            raise _HTTPError(413, None, "Request body too large")
        return self.rfile.read(length) if length else b""

    def _send_json(
        self, status: int, payload: dict[str, Any] | None, extra: dict[str, str] | None = None
    ) -> None:
        data = b"" if payload is None else json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Twilio-Request-Id", _new_sid("RQ"))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if data:
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client gave up (e.g. timed out during a hang)
            self.close_connection = True


def _error_payload(status: int, code: int | None, message: str) -> dict[str, Any]:
    """Twilio's legacy error JSON, which the SDK turns into TwilioRestException."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}" if code is not None else None,
        "status": status,
    }


class FakeTwilio:
    """An in-process fake of Twilio's Messages API (2010-04-01).

    Use as a context manager, point the SDK at ``url`` and assert on
    ``messages``.  All public methods are thread-safe.
    """

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.host = host
        self.port = port
        self.url = ""  # set by start(), e.g. "http://127.0.0.1:54321"
        self._lock = threading.Lock()
        self._messages: list[RecordedMessage] = []
        self._by_sid: dict[str, RecordedMessage] = {}
        self._requests = 0
        self._request_log: list[CreateRequest] = []
        self._faults: deque[Fault] = deque()
        self._recipient_faults: dict[str, Fault] = {}
        self._latency = 0.0
        self._holding = False
        self._smart_encoding = False
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> FakeTwilio:
        """Bind and serve in a daemon thread; returns self for chaining."""
        if self._server is not None:
            raise RuntimeError("FakeTwilio is already running")
        ipv6 = ":" in self.host
        server = _Server((self.host, self.port), self, ipv6)
        port = int(server.server_address[1])
        self._stopping = threading.Event()
        self._server = server
        self.url = f"http://[{self.host}]:{port}" if ipv6 else f"http://{self.host}:{port}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeTwilio:{port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake hanging handlers and drop open connections."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = None
        self._thread = None
        self._stopping.set()
        server.shutdown()
        with server.connections_lock:
            open_connections = list(server.connections)
        for conn in open_connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeTwilio:
        return self.start() if self._server is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inspection and control -------------------------------------------

    @property
    def messages(self) -> list[RecordedMessage]:
        """Snapshot of accepted messages, oldest first (copies, safe to keep)."""
        with self._lock:
            return [dataclasses.replace(m) for m in self._messages]

    @property
    def requests(self) -> int:
        """Create (POST Messages.json) requests received, faulted ones included."""
        with self._lock:
            return self._requests

    @property
    def request_log(self) -> list[CreateRequest]:
        """Every create request that reached message handling, oldest first (for backoff checks)."""
        with self._lock:
            return list(self._request_log)

    def sent_to(self, to: str) -> list[RecordedMessage]:
        """Accepted messages addressed to ``to``, oldest first."""
        return [m for m in self.messages if m.to == to]

    def queue_faults(self, *faults: Fault) -> None:
        """The next len(faults) create requests get these faults, in order."""
        with self._lock:
            self._faults.extend(faults)

    def fail_recipient(self, to: str, fault: Fault) -> None:
        """Every create request to ``to`` gets ``fault`` (e.g. permanent 21211)."""
        with self._lock:
            self._recipient_faults[to] = fault

    def set_latency(self, seconds: float) -> None:
        """Every request sleeps this long first, to model network/API latency."""
        if seconds < 0:
            raise ValueError("latency must not be negative")
        with self._lock:
            self._latency = seconds

    def hold_in_queue(self) -> None:
        """Keep accepted messages in Twilio's queue (``queued``, no ``date_sent``) until released.

        Twilio queues messages a sender cannot send yet (its rate, a busy carrier), sometimes
        for hours on a big day; meanwhile they have no ``date_sent``.
        """
        with self._lock:
            self._holding = True

    def release_queue(self) -> None:
        """Send every held message now (``sent``, ``date_sent`` set) and stop holding new ones."""
        with self._lock:
            self._holding = False
            now = datetime.now(UTC)
            for message in self._messages:
                if message.date_sent is None:
                    message.date_sent, message.status = now, "sent"

    def use_smart_encoding(self, on: bool = True) -> None:
        """Rewrite bodies as a Messaging Service with Smart Encoding does (on by default there).

        Curly quotes, long dashes, the ellipsis and Unicode spaces become their GSM-7
        look-alikes, but only when that makes the whole body GSM-7 (no emoji, no Chinese).
        The stored (and listed) body is the rewritten one.
        """
        with self._lock:
            self._smart_encoding = on

    def reset(self) -> None:
        """Forget messages, faults, latency and counters (between tests)."""
        with self._lock:
            self._holding = False
            self._smart_encoding = False
            self._messages.clear()
            self._by_sid.clear()
            self._requests = 0
            self._request_log.clear()
            self._faults.clear()
            self._recipient_faults.clear()
            self._latency = 0.0

    def deliver_status(
        self,
        sid: str,
        status: str,
        error_code: int | None = None,
        timeout: float = 5.0,
    ) -> None:
        """POST a signed status callback for ``sid``, as Twilio would.

        Also updates the recorded message's status.  ``ErrorCode`` is sent for
        failed/undelivered (``error_code``, default 30008) or whenever
        ``error_code`` is given.  Raises KeyError for an unknown sid,
        ValueError when the message has no StatusCallback, and
        urllib.error.HTTPError when the receiver answers >= 400.
        """
        with self._lock:
            message = self._by_sid.get(sid)
            if message is None:
                raise KeyError(sid)
            if message.status_callback is None:
                raise ValueError(f"message {sid} has no StatusCallback")
            message.status = status
            if message.date_sent is None and status not in _WAITING_STATUSES:
                message.date_sent = datetime.now(UTC)
            callback = message.status_callback
            params: dict[str, str] = {
                "AccountSid": message.account_sid,
                "ApiVersion": API_VERSION,
                "MessageSid": message.sid,
                "MessageStatus": status,
                "SmsSid": message.sid,
                "SmsStatus": status,
                "To": message.to,
            }
            if message.from_ is not None:
                params["From"] = message.from_
            if message.messaging_service_sid is not None:
                params["MessagingServiceSid"] = message.messaging_service_sid
        if error_code is not None or status in _FAILED_STATUSES:
            params["ErrorCode"] = str(error_code if error_code is not None else 30008)
        request = urllib.request.Request(
            callback,
            data=urllib.parse.urlencode(params).encode("utf-8"),
            method="POST",
            headers={
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                "User-Agent": "TwilioProxy/1.1",
                "X-Twilio-Signature": _signature(self.auth_token, callback, params),
            },
        )
        # Connect directly, as Twilio would: a proxy from the environment must not
        # intercept callbacks to a local test receiver.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=timeout) as response:
            response.read()

    # -- request handling (called from handler threads) ---------------------

    def _wait(self, seconds: float) -> None:
        """Sleep, but wake immediately when the server stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _handle(
        self, method: str, raw_path: str, authorization: str | None, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            latency = self._latency
        self._wait(latency)
        split = urllib.parse.urlsplit(raw_path)
        path = split.path
        list_match = _LIST_PATH.match(path)
        item_match = _ITEM_PATH.match(path)
        if list_match is None and item_match is None:
            raise _HTTPError(404, 20404, f"The requested resource {path} was not found")
        if list_match is not None and method == "POST":
            with self._lock:
                self._requests += 1
        self._check_auth(authorization)
        match = list_match or item_match
        assert match is not None
        if match.group("account") != self.account_sid:
            raise _HTTPError(404, 20404, f"The requested resource {path} was not found")
        if list_match is not None and method == "POST":
            return self._create(_parse_form(body.decode("utf-8", "replace")))
        if list_match is not None and method == "GET":
            return self._list(path, _parse_form(split.query))
        if item_match is not None and method == "GET":
            return self._fetch(item_match.group("sid"), path)
        raise _HTTPError(405, 20004, f"Method {method} not allowed on {path}")

    def _check_auth(self, authorization: str | None) -> None:
        scheme, _, encoded = (authorization or "").partition(" ")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        user, _, password = decoded.partition(":")
        ok = (
            scheme.lower() == "basic"
            and hmac.compare_digest(user.encode(), self.account_sid.encode())
            and hmac.compare_digest(password.encode(), self.auth_token.encode())
        )
        if not ok:
            raise _HTTPError(401, 20003, "Authenticate")

    def _create(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        to = form.get("To", "").strip()
        from_ = form.get("From") or None
        service = form.get("MessagingServiceSid") or None
        body = form.get("Body", "")
        content_sid = form.get("ContentSid") or None
        if not to:
            raise _HTTPError(400, 21604, "A 'To' phone number is required.")
        if from_ is None and service is None:
            raise _HTTPError(400, 21603, "A 'From' phone number is required.")
        if not body and content_sid is None and not form.get("MediaUrl"):
            raise _HTTPError(400, 21619, "A text message body or media urls must be specified.")
        if len(body) > _MAX_MESSAGE_CHARS:
            raise _HTTPError(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        message = RecordedMessage(
            sid=_new_sid("SM"),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            messaging_service_sid=service,
            body=body,
            # Twilio answers "accepted" when it still has to pick a sender from the service.
            status="queued" if from_ is not None else "accepted",
            status_callback=form.get("StatusCallback") or None,
            date_created=datetime.now(UTC),
            content_sid=content_sid,
            content_variables=form.get("ContentVariables") or None,
        )
        with self._lock:
            if self._smart_encoding:
                message.body = _smart_encoded(message.body)
            if not self._holding:  # handed to the carrier at once; the status stays as answered
                message.date_sent = message.date_created
            fault = self._faults.popleft() if self._faults else self._recipient_faults.get(to)
            answer = 201 if fault is None else fault.status
            self._request_log.append(CreateRequest(at=message.date_created, to=to, status=answer))
        if fault is None:
            self._record(message)
            return 201, self._message_json(message)
        if fault.record or fault.status < 400:
            self._record(message)
        self._wait(fault.hang_seconds)
        if fault.status < 400:
            return fault.status, self._message_json(message)
        code = fault.code if fault.code is not None else _DEFAULT_CODES.get(fault.status)
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
        raise _HTTPError(fault.status, code, fault.message, headers)

    def _record(self, message: RecordedMessage) -> None:
        with self._lock:
            self._messages.append(message)
            self._by_sid[message.sid] = message

    def _fetch(self, sid: str, path: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            message = self._by_sid.get(sid)
            payload = None if message is None else self._message_json(message)
        if payload is None:
            raise _HTTPError(404, 20404, f"The requested resource {path} was not found")
        return 200, payload

    def _list(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            filters = {
                key: _DateFilter(query[key]) for key in ("DateSent", "DateSent>", "DateSent<") if key in query
            }
        except ValueError:
            raise _HTTPError(400, 20001, "Invalid DateSent filter") from None
        try:
            page_size = int(query.get("PageSize", _DEFAULT_PAGE_SIZE))
            page = int(query.get("Page", 0))
        except ValueError:
            raise _HTTPError(400, 20001, "Invalid PageSize or Page") from None
        if not 1 <= page_size <= _MAX_PAGE_SIZE or page < 0:
            raise _HTTPError(400, 20001, "Invalid PageSize or Page")

        def wanted(m: RecordedMessage) -> bool:
            if "To" in query and m.to != query["To"]:
                return False
            if "From" in query and m.from_ != query["From"]:
                return False
            exact, after, before = filters.get("DateSent"), filters.get("DateSent>"), filters.get("DateSent<")
            if m.date_sent is None:  # still in Twilio's queue: no DateSent filter matches it
                return not filters
            return (
                (exact is None or exact.same_day(m.date_sent))
                and (after is None or after.compare(m.date_sent) >= 0)
                and (before is None or before.compare(m.date_sent) <= 0)
            )

        with self._lock:
            matching = [m for m in reversed(self._messages) if wanted(m)]  # newest first, like Twilio
            start = page * page_size
            token = query.get("PageToken", "")
            if token.startswith("PA"):
                after_sid = token[2:]
                for index, m in enumerate(matching):
                    if m.sid == after_sid:
                        start = index + 1
                        break
            records = [self._message_json(m) for m in matching[start : start + page_size]]
        kept: dict[str, str] = {
            k: query[k] for k in ("To", "From", "DateSent", "DateSent>", "DateSent<") if k in query
        }

        def page_uri(number: int, page_token: str | None = None) -> str:
            params = dict(kept, PageSize=str(page_size), Page=str(number))
            if page_token is not None:
                params["PageToken"] = page_token
            return f"{path}?{urllib.parse.urlencode(params)}"

        has_next = start + page_size < len(matching)
        return 200, {
            "messages": records,
            "page": page,
            "page_size": page_size,
            "start": start,
            "end": start + max(len(records) - 1, 0),
            "uri": page_uri(page, token or None),
            "first_page_uri": page_uri(0),
            "next_page_uri": page_uri(page + 1, "PA" + records[-1]["sid"]) if has_next and records else None,
            "previous_page_uri": page_uri(page - 1) if page > 0 else None,
        }

    def _message_json(self, m: RecordedMessage) -> dict[str, Any]:
        """The Message resource as Twilio's API returns it."""
        created = _rfc2822(m.date_created)
        uri = f"/{API_VERSION}/Accounts/{m.account_sid}/Messages/{m.sid}"
        failed = m.status in _FAILED_STATUSES
        return {
            "account_sid": m.account_sid,
            "api_version": API_VERSION,
            "body": m.body,
            "date_created": created,
            "date_sent": _rfc2822(m.date_sent) if m.date_sent is not None else None,
            "date_updated": created,
            "direction": "outbound-api",
            "error_code": 30008 if failed else None,
            "error_message": "Unknown error" if failed else None,
            "from": m.from_,
            "messaging_service_sid": m.messaging_service_sid,
            "num_media": "0",
            "num_segments": str(_num_segments(m.body)),
            "price": None,
            "price_unit": "USD",
            "sid": m.sid,
            "status": m.status,
            "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
            "to": m.to,
            "uri": f"{uri}.json",
        }


def _parse_form(text: str) -> dict[str, str]:
    """Form/query fields, first value wins (Twilio's single-valued fields)."""
    fields: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
        fields.setdefault(key, value)
    return fields


def main(argv: list[str] | None = None) -> None:
    """Run the fake in the foreground for demos and benchmarks."""
    parser = argparse.ArgumentParser(
        description="Local Twilio-compatible Messages API (never sends anything)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds every request sleeps")
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    args = parser.parse_args(argv)

    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    fake = FakeTwilio(
        account_sid=args.account_sid, auth_token=args.auth_token, host=args.host, port=args.port
    )
    fake.set_latency(args.latency)
    fake.start()
    print(f"FakeTwilio listening on {fake.url}", flush=True)
    print(f"account_sid: {fake.account_sid}", flush=True)
    print(f"auth_token:  {fake.auth_token}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
