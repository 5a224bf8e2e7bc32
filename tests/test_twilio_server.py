"""FakeTwilio must behave like Twilio as seen through the real twilio SDK."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from careflow.testing.twilio_server import FakeTwilio, Fault, RecordedMessage

REPO_ROOT = Path(__file__).resolve().parents[1]
SENDER = "+15550000001"
CUSTOMER = "+15551234567"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests honours proxy variables; local traffic must go straight to the fake."""
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as server:
        yield server


def make_client(fake: FakeTwilio, timeout: float = 5.0, token: str | None = None) -> Client:
    client = Client(
        fake.account_sid,
        token if token is not None else fake.auth_token,
        http_client=TwilioHttpClient(timeout=timeout),
    )
    client.api.base_url = fake.url
    return client


@pytest.fixture
def client(fake: FakeTwilio) -> Client:
    return make_client(fake)


def raw_request(
    fake: FakeTwilio, method: str, path: str, auth: tuple[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """Hit the fake without the SDK, to check wire-level details."""
    request = urllib.request.Request(fake.url + path, method=method)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_create_returns_sid_and_is_recorded(fake: FakeTwilio, client: Client) -> None:
    before = datetime.now(UTC)
    msg = client.messages.create(to=CUSTOMER, from_=SENDER, body="Your car is ready")

    assert msg.sid.startswith("SM") and len(msg.sid) == 34
    assert msg.status == "queued"
    assert msg.to == CUSTOMER
    assert msg.from_ == SENDER
    assert msg.body == "Your car is ready"
    assert msg.num_segments == "1"
    assert msg.direction == "outbound-api"
    assert msg.account_sid == fake.account_sid
    assert msg.error_code is None
    assert msg.date_created is not None
    assert abs((msg.date_created - before).total_seconds()) < 5

    recorded = fake.messages
    assert len(recorded) == 1
    rec = recorded[0]
    assert isinstance(rec, RecordedMessage)
    assert (rec.sid, rec.to, rec.from_, rec.body) == (msg.sid, CUSTOMER, SENDER, "Your car is ready")
    assert rec.messaging_service_sid is None
    assert rec.date_created.tzinfo is not None and rec.date_created.utcoffset() == timedelta(0)
    assert fake.sent_to(CUSTOMER) == recorded
    assert fake.sent_to("+15559999999") == []
    assert fake.requests == 1


def test_num_segments_follow_gsm_and_ucs2_rules(client: Client) -> None:
    assert client.messages.create(to=CUSTOMER, from_=SENDER, body="a" * 160).num_segments == "1"
    assert client.messages.create(to=CUSTOMER, from_=SENDER, body="a" * 161).num_segments == "2"
    assert client.messages.create(to=CUSTOMER, from_=SENDER, body="您好" * 36).num_segments == "2"


def test_messaging_service_sid(fake: FakeTwilio, client: Client) -> None:
    service = "MG" + "1" * 32
    msg = client.messages.create(
        to=CUSTOMER, messaging_service_sid=service, body="hi", status_callback="http://cb.invalid/s"
    )
    assert msg.messaging_service_sid == service
    assert msg.from_ is None
    rec = fake.messages[0]
    assert rec.messaging_service_sid == service
    assert rec.from_ is None
    assert rec.status_callback == "http://cb.invalid/s"


def test_whatsapp_content_template(fake: FakeTwilio, client: Client) -> None:
    variables = json.dumps({"1": "Ana", "2": "12:30"})
    client.messages.create(
        to="whatsapp:" + CUSTOMER,
        from_="whatsapp:" + SENDER,
        content_sid="HX" + "2" * 32,
        content_variables=variables,
    )
    rec = fake.sent_to("whatsapp:" + CUSTOMER)[0]
    assert rec.content_sid == "HX" + "2" * 32
    assert rec.content_variables == variables
    assert rec.body == ""


def test_missing_sender_or_body_is_rejected(fake: FakeTwilio, client: Client) -> None:
    with pytest.raises(TwilioRestException) as no_sender:
        client.messages.create(to=CUSTOMER, body="hi")
    assert (no_sender.value.status, no_sender.value.code) == (400, 21603)

    with pytest.raises(TwilioRestException) as no_body:
        client.messages.create(to=CUSTOMER, from_=SENDER)
    assert (no_body.value.status, no_body.value.code) == (400, 21619)
    assert fake.messages == []


def test_bad_auth_is_401(fake: FakeTwilio) -> None:
    client = make_client(fake, token="wrong-token")
    with pytest.raises(TwilioRestException) as exc:
        client.messages.create(to=CUSTOMER, from_=SENDER, body="hi")
    assert exc.value.status == 401
    assert exc.value.code == 20003
    assert fake.messages == []

    status, payload = raw_request(fake, "GET", f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json")
    assert status == 401 and payload["code"] == 20003


def test_account_sid_in_path_must_match(fake: FakeTwilio) -> None:
    other = "AC" + "0" * 32
    path = f"/2010-04-01/Accounts/{other}/Messages.json"
    status, payload = raw_request(fake, "GET", path, auth=(fake.account_sid, fake.auth_token))
    assert status == 404
    assert payload["code"] == 20404


def test_queued_faults_then_normal_behaviour(fake: FakeTwilio, client: Client) -> None:
    fake.queue_faults(
        Fault(status=429, code=20429, message="Too Many Requests"),
        Fault(status=500),
        Fault(status=400, code=21610, message="Attempt to send to unsubscribed recipient"),
    )
    expected = [(429, 20429), (500, 20500), (400, 21610)]
    for status, code in expected:
        with pytest.raises(TwilioRestException) as exc:
            client.messages.create(to=CUSTOMER, from_=SENDER, body="hi")
        assert (exc.value.status, exc.value.code) == (status, code)
    assert fake.messages == []

    msg = client.messages.create(to=CUSTOMER, from_=SENDER, body="hi")
    assert [m.sid for m in fake.messages] == [msg.sid]
    assert fake.requests == 4


def test_fault_error_json_shape(fake: FakeTwilio) -> None:
    fake.queue_faults(Fault(status=400, code=21211, message="Invalid 'To' Phone Number"))
    data = urllib.parse.urlencode({"To": "123", "From": SENDER, "Body": "x"}).encode()
    request = urllib.request.Request(
        f"{fake.url}/2010-04-01/Accounts/{fake.account_sid}/Messages.json", data=data, method="POST"
    )
    token = base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as exc:
        opener.open(request, timeout=5)
    assert exc.value.code == 400
    assert json.loads(exc.value.read()) == {
        "code": 21211,
        "message": "Invalid 'To' Phone Number",
        "more_info": "https://www.twilio.com/docs/errors/21211",
        "status": 400,
    }


def test_fail_recipient_is_permanent(fake: FakeTwilio, client: Client) -> None:
    bad = "+15550001111"
    fake.fail_recipient(bad, Fault(status=400, code=21211, message="Invalid 'To' Phone Number"))
    for _ in range(2):
        with pytest.raises(TwilioRestException) as exc:
            client.messages.create(to=bad, from_=SENDER, body="hi")
        assert (exc.value.status, exc.value.code) == (400, 21211)
    ok = client.messages.create(to=CUSTOMER, from_=SENDER, body="hi")
    assert [m.sid for m in fake.messages] == [ok.sid]
    assert fake.sent_to(bad) == []
    assert fake.requests == 3


def test_hang_times_out_client_and_record_true_keeps_message(fake: FakeTwilio) -> None:
    client = make_client(fake, timeout=0.3)
    since = datetime.now(UTC) - timedelta(seconds=5)
    fake.queue_faults(Fault(status=500, hang_seconds=3.0, record=True))

    started = time.monotonic()
    with pytest.raises((requests.exceptions.Timeout, requests.exceptions.ConnectionError)):
        client.messages.create(to=CUSTOMER, from_=SENDER, body="lost reply")
    assert time.monotonic() - started < 2.5

    # Twilio "sent it" although the reply never arrived.
    recorded = fake.sent_to(CUSTOMER)
    assert [m.body for m in recorded] == ["lost reply"]
    found = make_client(fake).messages.list(to=CUSTOMER, date_sent_after=since)
    assert [m.sid for m in found] == [recorded[0].sid]
    assert found[0].body == "lost reply"


def test_hang_without_record_leaves_no_message(fake: FakeTwilio) -> None:
    client = make_client(fake, timeout=0.3)
    fake.queue_faults(Fault(status=503, hang_seconds=3.0))
    with pytest.raises((requests.exceptions.Timeout, requests.exceptions.ConnectionError)):
        client.messages.create(to=CUSTOMER, from_=SENDER, body="never sent")
    assert fake.messages == []
    assert make_client(fake).messages.list(to=CUSTOMER) == []
    assert fake.requests == 1


def test_stop_does_not_wait_for_hanging_requests() -> None:
    fake = FakeTwilio().start()
    fake.queue_faults(Fault(hang_seconds=30.0))
    client = make_client(fake, timeout=0.2)
    with pytest.raises((requests.exceptions.Timeout, requests.exceptions.ConnectionError)):
        client.messages.create(to=CUSTOMER, from_=SENDER, body="x")
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 2.0
    with pytest.raises(requests.exceptions.ConnectionError):
        make_client(fake, timeout=1.0).messages.create(to=CUSTOMER, from_=SENDER, body="x")


def test_list_filters_and_pagination(fake: FakeTwilio, client: Client) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    sids = [client.messages.create(to=CUSTOMER, from_=SENDER, body=f"m{i}").sid for i in range(5)]
    other = client.messages.create(to="+15557654321", from_=SENDER, body="other").sid

    listed = client.messages.list(to=CUSTOMER, date_sent_after=since, page_size=2)
    assert [m.sid for m in listed] == list(reversed(sids))  # newest first, across 3 pages

    assert [m.sid for m in client.messages.list(from_=SENDER, limit=3)] == [other, *reversed(sids[3:])]
    assert client.messages.list(to=CUSTOMER, date_sent_after=datetime.now(UTC) + timedelta(hours=1)) == []
    assert client.messages.list(to=CUSTOMER, date_sent_before=since) == []
    sent_on = fake.messages[0].date_created.replace(hour=23, minute=59)  # same day, later time
    assert len(client.messages.list(date_sent=sent_on)) == 6
    assert client.messages.list(date_sent=sent_on - timedelta(days=1)) == []

    first = client.messages.page(to=CUSTOMER, page_size=2)
    assert first.next_page_url is not None
    assert len(list(first)) == 2


def test_a_message_held_in_the_queue_has_no_date_sent_until_released(
    fake: FakeTwilio, client: Client
) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    fake.hold_in_queue()
    sid = client.messages.create(to=CUSTOMER, from_=SENDER, body="waiting").sid
    held = client.messages(sid).fetch()
    assert held.status == "queued" and held.date_sent is None and held.date_created is not None
    assert client.messages.list(to=CUSTOMER, date_sent_after=since) == []  # as on Twilio
    assert [m.sid for m in client.messages.list(to=CUSTOMER)] == [sid]

    fake.release_queue()
    released = client.messages(sid).fetch()
    assert released.status == "sent" and released.date_sent is not None
    assert [m.sid for m in client.messages.list(to=CUSTOMER, date_sent_after=since)] == [sid]


def test_smart_encoding_rewrites_only_bodies_it_can_make_gsm(fake: FakeTwilio, client: Client) -> None:
    fake.use_smart_encoding()
    client.messages.create(to=CUSTOMER, from_=SENDER, body="It’s “done” — thanks…")
    client.messages.create(to=CUSTOMER, from_=SENDER, body="“生日快乐” — 谢谢")  # stays Unicode
    assert [m.body for m in fake.messages] == ['It\'s "done" - thanks...', "“生日快乐” — 谢谢"]


def test_list_accepts_plain_dates(fake: FakeTwilio, client: Client) -> None:
    client.messages.create(to=CUSTOMER, from_=SENDER, body="x")
    today = datetime.now(UTC).date()
    base = f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json?"
    auth = (fake.account_sid, fake.auth_token)

    def count(**params: str) -> int:
        status, payload = raw_request(fake, "GET", base + urllib.parse.urlencode(params), auth=auth)
        assert status == 200
        assert payload["next_page_uri"] is None
        return len(payload["messages"])

    assert count(**{"DateSent>": str(today)}) == 1
    assert count(**{"DateSent<": str(today)}) == 1
    assert count(**{"DateSent": str(today)}) == 1
    assert count(**{"DateSent>": str(today + timedelta(days=1))}) == 0
    assert count(**{"DateSent<": str(today - timedelta(days=1))}) == 0


def test_fetch_by_sid(fake: FakeTwilio, client: Client) -> None:
    sid = client.messages.create(to=CUSTOMER, from_=SENDER, body="fetch me").sid
    fetched = client.messages(sid).fetch()
    assert (fetched.sid, fetched.to, fetched.body, fetched.status) == (sid, CUSTOMER, "fetch me", "queued")

    with pytest.raises(TwilioRestException) as exc:
        client.messages("SM" + "f" * 32).fetch()
    assert (exc.value.status, exc.value.code) == (404, 20404)


def test_unknown_path_is_twilio_404(fake: FakeTwilio) -> None:
    status, payload = raw_request(fake, "GET", "/2010-04-01/Accounts/whatever/Calls.json")
    assert status == 404
    assert payload["code"] == 20404
    assert payload["more_info"] == "https://www.twilio.com/docs/errors/20404"


class _Receiver:
    """A tiny webhook endpoint that records what it was sent."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], str]] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                receiver.received.append((self.path, form, self.headers.get("X-Twilio-Signature", "")))
                receiver.arrived.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/twilio/status?tenant=7"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_status_callback_is_delivered_and_signed(fake: FakeTwilio, client: Client) -> None:
    receiver = _Receiver()
    try:
        sid = client.messages.create(to=CUSTOMER, from_=SENDER, body="hi", status_callback=receiver.url).sid
        fake.deliver_status(sid, "delivered")
        fake.deliver_status(sid, "failed")
    finally:
        receiver.close()

    assert len(receiver.received) == 2
    (path, delivered, signature), (_, failed, failed_signature) = receiver.received
    assert path == "/twilio/status?tenant=7"
    assert delivered["MessageSid"] == sid
    assert delivered["MessageStatus"] == "delivered"
    assert delivered["AccountSid"] == fake.account_sid
    assert (delivered["To"], delivered["From"]) == (CUSTOMER, SENDER)
    assert "ErrorCode" not in delivered
    assert failed["MessageStatus"] == "failed"
    assert failed["ErrorCode"] == "30008"

    validator = RequestValidator(fake.auth_token)
    assert validator.validate(receiver.url, delivered, signature)
    assert validator.validate(receiver.url, failed, failed_signature)
    assert not RequestValidator("another-token").validate(receiver.url, delivered, signature)
    assert not validator.validate(receiver.url, failed, signature)

    assert fake.messages[0].status == "failed"
    assert client.messages(sid).fetch().status == "failed"


def test_deliver_status_needs_known_sid_with_callback(fake: FakeTwilio, client: Client) -> None:
    sid = client.messages.create(to=CUSTOMER, from_=SENDER, body="hi").sid
    with pytest.raises(ValueError):
        fake.deliver_status(sid, "delivered")
    with pytest.raises(KeyError):
        fake.deliver_status("SM" + "0" * 32, "delivered")


def test_latency_and_reset(fake: FakeTwilio, client: Client) -> None:
    fake.set_latency(0.25)
    started = time.monotonic()
    client.messages.create(to=CUSTOMER, from_=SENDER, body="slow")
    assert time.monotonic() - started >= 0.25

    fake.queue_faults(Fault())
    fake.fail_recipient(CUSTOMER, Fault(status=400, code=21211))
    fake.reset()
    assert fake.messages == [] and fake.requests == 0
    started = time.monotonic()
    client.messages.create(to=CUSTOMER, from_=SENDER, body="fast and fine")
    assert time.monotonic() - started < 0.25
    assert [m.body for m in fake.messages] == ["fast and fine"]


def test_messages_returns_a_copy(fake: FakeTwilio, client: Client) -> None:
    client.messages.create(to=CUSTOMER, from_=SENDER, body="original")
    snapshot = fake.messages
    snapshot[0].body = "tampered"
    snapshot.clear()
    assert [m.body for m in fake.messages] == ["original"]


def test_server_logs_nothing(fake: FakeTwilio, client: Client, capfd: pytest.CaptureFixture[str]) -> None:
    client.messages.create(to=CUSTOMER, from_=SENDER, body="secret-body-text")
    raw_request(fake, "GET", "/nowhere")
    out, err = capfd.readouterr()
    assert "secret-body-text" not in out + err
    assert "Messages.json" not in out + err
    assert "/nowhere" not in out + err


def test_main_runs_in_foreground() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "careflow.testing.twilio_server", "--port", "0", "--latency", "0"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        url = lines[0].split()[-1]
        assert url.startswith("http://127.0.0.1:")
        assert lines[1].split()[-1].startswith("AC")
        assert lines[2].split()[-1] == "test-auth-token"
        fake = FakeTwilio()
        fake.url = url
        msg = make_client(fake).messages.create(to=CUSTOMER, from_=SENDER, body="demo")
        assert msg.sid.startswith("SM")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
