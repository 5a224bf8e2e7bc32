"""Webhooks over real HTTP (uvicorn on loopback) with callbacks signed like Twilio's.

The fake Twilio server's log is the judge of what was sent; the outbox and consent rows
are the judge of what changed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from careflow.care import InboundReply
from careflow.hookspecs import hookimpl
from careflow.planning.plan import plan
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import CareEvent, EventStatus, Reply
from careflow.testing import add_customer, parse_instant
from careflow.testing.twilio_server import FakeTwilio
from tests.care_plugins_for_tests import EveryoneToday, ExtraCarePlugins
from tests.policy_support import consents, events, inbound, post, serving, signed_post, twilio_runtime

NOW = parse_instant("2026-05-11T10:00:00+08:00")


@pytest.fixture
def runtime(tmp_path: Path, fake_twilio: FakeTwilio) -> Iterator[Runtime]:
    rt = twilio_runtime(f"sqlite:///{tmp_path / 'c.db'}", fake_twilio)
    yield rt
    rt.close()


@pytest.fixture
def any_db_runtime(db_url: str, fake_twilio: FakeTwilio) -> Iterator[Runtime]:
    """On SQLite and again on the real PostgreSQL server."""
    rt = twilio_runtime(db_url, fake_twilio)
    yield rt
    rt.close()


def seed(runtime: Runtime, count: int) -> dict[str, int]:
    """Customers with a birthday today; phone -> customer id."""
    found = {}
    with runtime.sessions.begin() as session:
        for i in range(count):
            phone = f"+8613800000{i:03d}"
            customer = add_customer(
                session,
                external_id=f"C{i}",
                name=f"客户{i}",
                phone=phone,
                birthday=(1990, 5, 11),
                locale="zh_CN",
            )
            found[phone] = customer.id
    return found


def test_stop_while_the_message_is_queued_means_it_is_never_sent(
    any_db_runtime: Runtime, fake_twilio: FakeTwilio
) -> None:
    runtime = any_db_runtime
    phones = seed(runtime, 3)
    stopper = "+8613800000001"
    plan(runtime, now=NOW)  # recorded and (in production) queued; nothing sent yet
    assert {e.status for e in events(runtime)} == {EventStatus.PLANNED}
    with serving(runtime) as base:
        status, _ = inbound(base, fake_twilio.auth_token, stopper, "STOP", "SMin1")
        assert status == 200
        run_day(runtime, now=NOW)  # the queued deliveries run now
    sent_to = sorted(m.to for m in fake_twilio.messages)
    assert sent_to == sorted(p for p in phones if p != stopper)
    stopped = next(e for e in events(runtime) if e.recipient == stopper)
    assert stopped.status == EventStatus.SUPPRESSED
    assert "withdrawn" in (stopped.status_reason or "")


@pytest.mark.parametrize(
    "word", ["STOP", "stop", " Stop. ", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "T", "td", "退订"]
)
def test_every_opt_out_keyword_withdraws_both_purposes(
    runtime: Runtime, fake_twilio: FakeTwilio, word: str
) -> None:
    customer_id = seed(runtime, 1)["+8613800000000"]
    with serving(runtime) as base:
        status, body = inbound(base, fake_twilio.auth_token, "+8613800000000", word, "SMkw")
    assert status == 200 and "<Response>" in body
    assert consents(runtime, customer_id)[("sms", "service")] is False
    assert consents(runtime, customer_id)[("sms", "marketing")] is False


def test_start_opts_back_in_and_help_answers_with_the_help_text(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    rt = twilio_runtime(
        f"sqlite:///{tmp_path / 'c.db'}", fake_twilio, center={"help_text": "安心汽车 客服 400-000-0000"}
    )
    try:
        customer_id = seed(rt, 1)["+8613800000000"]
        with serving(rt) as base:
            inbound(base, fake_twilio.auth_token, "+8613800000000", "退订", "SM1")
            assert consents(rt, customer_id)[("sms", "marketing")] is False
            inbound(base, fake_twilio.auth_token, "+8613800000000", "START", "SM2")
            assert consents(rt, customer_id) == {
                ("sms", "service"): True,
                ("sms", "marketing"): True,
                ("email", "service"): False,
                ("email", "marketing"): False,
            }
            status, body = inbound(base, fake_twilio.auth_token, "+8613800000000", "help", "SM3")
            assert status == 200
            assert "<Message>安心汽车 客服 400-000-0000</Message>" in body
            # An ordinary reply is stored with the customer, and consents are untouched.
            inbound(base, fake_twilio.auth_token, "+8613800000000", "谢谢，下周来保养", "SM4")
            inbound(base, fake_twilio.auth_token, "+8613800000000", "谢谢，下周来保养", "SM4")  # repeated
        with rt.sessions() as session:
            replies = list(session.scalars(select(Reply).order_by(Reply.id)))
        assert [r.keyword for r in replies] == ["stop", "start", "help", None]
        assert replies[-1].customer_id == customer_id and replies[-1].body == "谢谢，下周来保养"
    finally:
        rt.close()


def test_center_policy_can_keep_service_messages_after_stop(tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    service = ExtraCarePlugins(tmp_path / "tpl", EveryoneToday("warranty", 90))  # purpose: service
    rt = twilio_runtime(
        f"sqlite:///{tmp_path / 'c.db'}",
        fake_twilio,
        center={"stop_withdraws": "marketing"},
        extra_plugins=[service],
        plugins={"birthday": {"enabled": True}, "warranty": {"enabled": True}},
    )
    try:
        customer_id = seed(rt, 1)["+8613800000000"]
        with serving(rt) as base:
            inbound(base, fake_twilio.auth_token, "+8613800000000", "STOP", "SM1")
        assert consents(rt, customer_id)[("sms", "marketing")] is False
        assert consents(rt, customer_id)[("sms", "service")] is True
        run_day(rt, now=NOW)
        by_plugin = {e.plugin: e for e in events(rt)}
        assert by_plugin["birthday"].status == EventStatus.SUPPRESSED  # marketing
        assert "sms: opted out of marketing" in (by_plugin["birthday"].status_reason or "")
        assert by_plugin["warranty"].status == EventStatus.SENT  # service still goes out
        assert [m.body for m in fake_twilio.messages] == ["【Anxin Auto】客户0：warranty note"]
    finally:
        rt.close()


def sent_event(runtime: Runtime, fake_twilio: FakeTwilio) -> CareEvent:
    seed(runtime, 1)
    run_day(runtime, now=NOW)
    (event,) = events(runtime)
    assert event.status == EventStatus.SENT and fake_twilio.messages[0].status_callback
    return event


def test_callbacks_out_of_order_or_repeated_never_move_status_backwards(
    any_db_runtime: Runtime, fake_twilio: FakeTwilio
) -> None:
    runtime = any_db_runtime
    with serving(runtime) as base:
        event = sent_event(runtime, fake_twilio)
        assert fake_twilio.messages[0].status_callback == f"{base}/webhooks/twilio/status"
        sid = event.provider_message_id
        assert sid is not None
        fake_twilio.deliver_status(sid, "delivered")
        assert events(runtime)[0].status == EventStatus.DELIVERED
        for late in ("queued", "sent", "delivered", "undelivered", "failed"):
            fake_twilio.deliver_status(sid, late)  # late, repeated or contradicting
            assert events(runtime)[0].status == EventStatus.DELIVERED


def test_undelivered_with_21610_records_the_opt_out(runtime: Runtime, fake_twilio: FakeTwilio) -> None:
    with serving(runtime):
        event = sent_event(runtime, fake_twilio)
        assert event.provider_message_id is not None
        fake_twilio.deliver_status(event.provider_message_id, "sent")
        fake_twilio.deliver_status(event.provider_message_id, "undelivered", error_code=21610)
    (after,) = events(runtime)
    assert after.status == EventStatus.UNDELIVERED and after.error_code == "21610"
    assert consents(runtime, after.customer_id)[("sms", "marketing")] is False


def test_forged_replayed_and_malformed_webhooks_are_rejected_and_change_nothing(
    runtime: Runtime, fake_twilio: FakeTwilio
) -> None:
    token = fake_twilio.auth_token
    with serving(runtime) as base:
        event = sent_event(runtime, fake_twilio)
        customer_id = event.customer_id
        before = consents(runtime, customer_id)
        status_url = f"{base}/webhooks/twilio/status"
        inbound_url = f"{base}/webhooks/twilio/inbound"
        delivered = {"MessageSid": event.provider_message_id or "", "MessageStatus": "failed"}
        stop = {"MessageSid": "SMx", "From": "+8613800000000", "Body": "STOP"}

        assert post(status_url, delivered)[0] == 403  # no signature
        assert post(status_url, delivered, signature="bm90IGEgc2lnbmF0dXJl")[0] == 403  # forged
        assert signed_post(status_url, delivered, "a-guessed-token")[0] == 403  # signed with the wrong key
        assert post(inbound_url, stop)[0] == 403
        # A genuine signature replayed to another URL, or with a changed body, is refused.
        from twilio.request_validator import RequestValidator

        good = RequestValidator(token).compute_signature(status_url, delivered)
        assert post(inbound_url, delivered, signature=good)[0] == 403
        assert post(status_url, {**delivered, "MessageStatus": "undelivered"}, signature=good)[0] == 403
        # Malformed: not form data, or signed but missing what Twilio always sends.
        assert post(status_url, {}, signature=good, raw=b"\xff\xfe\x00garbage")[0] == 403
        assert signed_post(status_url, {"MessageStatus": "failed"}, token)[0] == 400
        assert signed_post(status_url, {"MessageSid": "SM1", "MessageStatus": "exploded"}, token)[0] == 400
        assert signed_post(inbound_url, {"Body": "STOP"}, token)[0] == 400
        # A real callback is applied exactly once; replaying it later changes nothing.
        sid = event.provider_message_id or ""
        fake_twilio.deliver_status(sid, "delivered")
        replay = {"MessageSid": sid, "MessageStatus": "sent", "To": "+8613800000000"}
        assert signed_post(status_url, replay, token) == (200, "no change")

    (after,) = events(runtime)
    assert after.status == EventStatus.DELIVERED and after.error_code is None
    assert consents(runtime, customer_id) == before
    with runtime.sessions() as session:
        assert session.scalar(select(Reply.id)) is None


def test_logs_never_carry_bodies_or_full_numbers(
    runtime: Runtime, fake_twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    seed(runtime, 1)
    caplog.set_level("DEBUG")
    with serving(runtime) as base:
        inbound(base, fake_twilio.auth_token, "+8613800000000", "我的车牌是沪A12345", "SMlog")
        inbound(base, fake_twilio.auth_token, "+8613800000000", "STOP", "SMlog2")
    text = caplog.text
    assert "inbound SMlog" in text  # it did log the event
    assert "+8613800000000" not in text and "沪A12345" not in text
    assert "+86*********00" in text


class ReplyRecorder:
    """A plugin reacting to replies; ``fail`` makes it raise after writing, to test isolation."""

    def __init__(self, fail: bool = False) -> None:
        self.seen: list[tuple[int | None, str]] = []
        self.fail = fail

    @hookimpl
    def careflow_reply_received(self, session: Session, reply: InboundReply) -> None:
        self.seen.append((reply.customer_id, reply.body))
        if self.fail:
            session.add(
                Reply(channel="sms", from_address="x", body="written by a failing hook", received_at=NOW)
            )
            session.flush()
            raise RuntimeError("survey plugin bug")


@pytest.mark.parametrize("fail", [False, True], ids=["ok", "hook-raises"])
def test_ordinary_replies_reach_the_reply_hook_keywords_do_not(
    tmp_path: Path, fake_twilio: FakeTwilio, fail: bool
) -> None:
    recorder = ReplyRecorder(fail=fail)
    rt = twilio_runtime(f"sqlite:///{tmp_path / 'c.db'}", fake_twilio, extra_plugins=[recorder])
    try:
        customer_id = seed(rt, 1)["+8613800000000"]
        with serving(rt) as base:
            assert inbound(base, fake_twilio.auth_token, "+8613800000000", "5", "SM1")[0] == 200
            assert inbound(base, fake_twilio.auth_token, "+8613800000000", "STOP", "SM2")[0] == 200
            assert inbound(base, fake_twilio.auth_token, "+8613899999999", "who is this?", "SM3")[0] == 200
        assert recorder.seen == [(customer_id, "5"), (None, "who is this?")]
        with rt.sessions() as session:
            bodies = list(session.scalars(select(Reply.body).order_by(Reply.id)))
        assert bodies == ["5", "STOP", "who is this?"]  # the failing hook's own write was rolled back
    finally:
        rt.close()


def stream_post(base: str, path: str, headers: dict[str, str], total: int) -> tuple[bytes, int]:
    """POST ``total`` bytes chunked over a raw socket; the server's answer and how much got sent.

    The answer is read by a thread of its own while the body is still going out, as a client
    that does not wait for its upload to finish would.
    """
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    answer = bytearray()

    def read() -> None:
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                answer.extend(data)

    reader = threading.Thread(target=read)
    reader.start()
    chunk = b"a" * 65536
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    try:
        sock.sendall(head.encode())
        while sent < total:
            sock.sendall(framed)
            sent += len(chunk)
        sock.sendall(b"0\r\n\r\n")
    except OSError:  # the server hung up: what it answered is in ``answer``
        pass
    reader.join(timeout=30)
    sock.close()
    return bytes(answer), sent


def test_a_huge_post_with_a_bogus_signature_is_refused_before_it_is_read(runtime: Runtime) -> None:
    huge = 200 * 1024 * 1024
    with serving(runtime) as base:
        answer, sent = stream_post(
            base,
            "/webhooks/twilio/inbound",
            {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "bogus"},
            huge,
        )
        # The server still answers afterwards: nothing was left half-consumed.
        assert inbound(base, "wrong token", "+8613800000000", "hi", "SMx")[0] == 403
    assert answer.startswith(b"HTTP/1.1 413 ")
    # The server hung up after its answer: the client could not push the 200 MB through
    # (at most what the sockets' buffers on both sides hold got out).
    assert sent < huge // 4
