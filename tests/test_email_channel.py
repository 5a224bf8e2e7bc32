"""E-mail through a real SMTP server on loopback: headers, both parts, escaping, unsubscribe, errors."""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.testclient import TestClient

from careflow.delivery.batch import deliver
from careflow.delivery.results import Outcome
from careflow.planning.plan import plan
from careflow.policies.channel_choice import choose_channel, load_consents
from careflow.rendering.unsubscribe_links import make_token
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import CareEvent, Consent, Customer, EventStatus
from careflow.testing import add_customer, build_runtime, make_settings, parse_instant
from careflow.web.unsubscribe import unsubscribe_routes
from tests.smtp_server import LocalSmtpServer, self_signed_cert

NOW = parse_instant("2026-05-11T10:00:00+08:00")
BIRTHDAY_TODAY = (1986, 5, 11)
SECRET = "test-secret-key-0123456789abcdef"
EVIL_NAME = '<script>alert("x")</script> & Co'


@pytest.fixture
def smtp() -> Iterator[LocalSmtpServer]:
    with LocalSmtpServer() as server:
        yield server


def email_runtime(db_url: str, smtp: LocalSmtpServer, **email: Any) -> Runtime:
    settings = make_settings(
        db_url,
        channels={"sms": {"provider": "console"}, "email": {"provider": "smtp"}},
        email={"host": "127.0.0.1", "port": smtp.port, "security": "none", **email},
        web={"secret_key": SECRET, "public_url": "https://care.example.com"},
        centers={
            "main": {
                "name": "Anxin Auto",
                "timezone": "Asia/Shanghai",
                "locale": "en",
                "address": "88 Century Avenue, Pudong, Shanghai",
                "email_from": "care@anxin.example.com",
            }
        },
        plugins={"birthday": {"enabled": True}},
        delivery={"max_attempts": 3, "min_backoff_ms": 10, "max_backoff_ms": 20},
    )
    return build_runtime(settings)


def add_email_customer(runtime: Runtime, external_id: str = "C1", **kwargs: Any) -> int:
    values: dict[str, Any] = {
        "name": EVIL_NAME,
        "phone": None,
        "email": "driver@example.org",
        "email_consent": True,
        "birthday": BIRTHDAY_TODAY,
        "locale": "en",
        **kwargs,
    }
    with runtime.sessions.begin() as session:
        return add_customer(session, external_id=external_id, **values).id


def planned_event(runtime: Runtime) -> CareEvent:
    plan(runtime, now=NOW)
    with runtime.sessions() as session:
        return session.scalars(select(CareEvent)).one()


def test_birthday_email_arrives_with_headers_both_parts_and_escaped_html(
    tmp_path: Path, smtp: LocalSmtpServer
) -> None:
    runtime = email_runtime(f"sqlite:///{tmp_path / 'c.db'}", smtp)
    try:
        customer_id = add_email_customer(runtime)
        result = run_day(runtime, now=NOW)
        assert result.report.new == 1
        [got] = smtp.received
        msg = got.message
        assert got.mail_from == "care@anxin.example.com"
        assert got.rcpt_tos == ["driver@example.org"]
        assert msg["From"].addresses[0].display_name == "Anxin Auto"
        assert msg["From"].addresses[0].addr_spec == "care@anxin.example.com"
        assert msg["To"] == "driver@example.org"
        assert msg["Subject"] == f"Happy birthday, {EVIL_NAME}!"
        token = make_token(SECRET, customer_id)
        # (A long header may be folded onto the next line; the value is the same.)
        assert msg["List-Unsubscribe"].strip() == f"<https://care.example.com/unsubscribe/{token}>"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg["Message-ID"].endswith("@anxin.example.com>")
        assert msg["Content-Language"] == "en"
        assert msg.get_content_type() == "multipart/alternative"

        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
        text_body, html_body = text.get_content(), html.get_content()
        # The text part is the customer's name as written; the HTML part can never run it.
        assert f"Dear {EVIL_NAME}," in text_body
        assert "<script>" not in html_body
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co" in html_body
        # The center's name and postal address, and the unsubscribe link, in both footers.
        for body in (text_body, html_body):
            assert "Anxin Auto" in body
            assert "88 Century Avenue, Pudong, Shanghai" in body
            assert f"https://care.example.com/unsubscribe/{token}" in body

        with runtime.sessions() as session:
            event = session.scalars(select(CareEvent)).one()
        assert event.status == EventStatus.SENT
        assert event.channel == "email"
        assert event.channel_reason == "sms: no phone; whatsapp: channel not configured; fell back to email"
        assert event.html_body is not None and "&lt;script&gt;" in event.html_body
        assert msg["Message-ID"].startswith(f"<{event.provider_message_id}@")
    finally:
        runtime.close()


def test_unsubscribe_link_withdraws_email_consent_once_and_rejects_tampering(
    tmp_path: Path, smtp: LocalSmtpServer
) -> None:
    runtime = email_runtime(f"sqlite:///{tmp_path / 'c.db'}", smtp)
    try:
        customer_id = add_email_customer(
            runtime, sms_consent=True, phone="+8613800138000", preferred_channel="email"
        )
        run_day(runtime, now=NOW)
        [got] = smtp.received
        link = got.message["List-Unsubscribe"].strip().strip("<>")
        path = link.removeprefix("https://care.example.com")
        client = TestClient(Starlette(routes=unsubscribe_routes(runtime)))

        def email_consents() -> dict[str, bool]:
            with runtime.sessions() as session:
                rows = session.scalars(select(Consent).where(Consent.customer_id == customer_id))
                return {f"{c.channel}/{c.purpose}": c.granted for c in rows}

        # Opening the link (as a mail scanner would) only asks.
        page = client.get(path)
        assert page.status_code == 200 and 'method="post"' in page.text
        assert email_consents()["email/marketing"] is True

        # The mail client's one-click POST (RFC 8058) withdraws both e-mail purposes, not SMS.
        done = client.post(path, content=b"List-Unsubscribe=One-Click")
        assert done.status_code == 200 and "no more e-mails from Anxin Auto" in done.text
        assert email_consents() == {
            "email/service": False,
            "email/marketing": False,
            "sms/service": True,
            "sms/marketing": True,
        }
        again = client.post(path)
        assert again.status_code == 200
        assert email_consents()["email/marketing"] is False

        token = path.rsplit("/", 1)[1]
        other_customer = token.replace(f"{customer_id}.", f"{customer_id + 1}.", 1)
        forged_channel = token.replace(".email.", ".sms.", 1)
        for bad in (other_customer, forged_channel, token[:-2], "garbage"):
            assert client.post(f"/unsubscribe/{bad}").status_code == 400
        assert email_consents()["sms/marketing"] is True

        # From now on care for this customer falls back from e-mail to SMS, and says so.
        with runtime.sessions() as session:
            customer = session.get(Customer, customer_id)
            assert customer is not None
            order, unavailable = runtime.channel_route("main")
            choice = choose_channel(
                customer,
                "marketing",
                order,
                load_consents(session, [customer_id]),
                preferred=customer.preferred_channel,
                unavailable=unavailable,
            )
        assert (choice.channel, choice.why) == (
            "sms",
            "preferred email: opted out of marketing; fell back to sms",
        )
    finally:
        runtime.close()


@pytest.mark.parametrize(
    ("reply", "outcome", "status", "code"),
    [
        ("550 5.1.1 mailbox unavailable", Outcome.FAILED, EventStatus.FAILED, "smtp-550"),
        ("452 4.2.2 mailbox full, try later", Outcome.RETRY, EventStatus.PLANNED, "smtp-452"),
    ],
)
def test_smtp_refusals_are_classified_like_sms_errors(
    tmp_path: Path, smtp: LocalSmtpServer, reply: str, outcome: Outcome, status: EventStatus, code: str
) -> None:
    runtime = email_runtime(f"sqlite:///{tmp_path / 'c.db'}", smtp)
    try:
        add_email_customer(runtime)
        smtp.reject("driver@example.org", reply)
        event = planned_event(runtime)
        assert deliver(runtime, event.id) is outcome
        with runtime.sessions() as session:
            after = session.get(CareEvent, event.id)
            assert after is not None
            assert (after.status, after.error_code) == (status, code)
            assert reply.split(" ", 2)[2] in (after.status_reason or "")
            assert after.needs_reconcile is False  # the server said no: nothing to reconcile
        assert smtp.received == []
    finally:
        runtime.close()


def test_unreachable_smtp_server_is_transient_and_later_succeeds(
    tmp_path: Path, smtp: LocalSmtpServer
) -> None:
    runtime = email_runtime(f"sqlite:///{tmp_path / 'c.db'}", smtp)
    try:
        add_email_customer(runtime)
        event = planned_event(runtime)
        smtp.stop()
        assert deliver(runtime, event.id) is Outcome.RETRY
        with runtime.sessions() as session:
            after = session.get(CareEvent, event.id)
            assert after is not None and after.status == EventStatus.PLANNED
            assert after.error_code == "smtp-connection"
        with LocalSmtpServer(port=smtp.port) as back:
            assert deliver(runtime, event.id) is Outcome.SENT
            assert len(back.received) == 1
    finally:
        runtime.close()


def test_starttls_with_login(tmp_path: Path) -> None:
    cert = self_signed_cert(tmp_path)
    with LocalSmtpServer(starttls=cert, users={"mailer": "s3cret"}) as server:
        runtime = email_runtime(
            f"sqlite:///{tmp_path / 'c.db'}",
            server,
            security="starttls",
            username="mailer",
            password="s3cret",
            ca_file=str(cert[0]),
        )
        try:
            add_email_customer(runtime)
            event = planned_event(runtime)
            assert deliver(runtime, event.id) is Outcome.SENT
            [got] = server.received
            assert got.authenticated_as == "mailer"
        finally:
            runtime.close()


# The server side counts only STARTTLS as TLS, so it warns about AUTH on an implicit-TLS port.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_and_a_wrong_password_is_permanent(tmp_path: Path) -> None:
    cert = self_signed_cert(tmp_path)
    with LocalSmtpServer(implicit_tls=cert, users={"mailer": "s3cret"}) as server:
        runtime = email_runtime(
            f"sqlite:///{tmp_path / 'c.db'}",
            server,
            security="tls",
            username="mailer",
            password="wrong",
            ca_file=str(cert[0]),
        )
        try:
            add_email_customer(runtime)
            event = planned_event(runtime)
            assert deliver(runtime, event.id) is Outcome.FAILED
            with runtime.sessions() as session:
                after = session.get(CareEvent, event.id)
                assert after is not None, after
                assert after.error_code == "smtp-535", after.status_reason
                assert "check email.username and email.password" in (after.status_reason or "")
            assert server.received == []
        finally:
            runtime.close()


def test_chinese_email_is_encoded_for_any_relay_and_reads_back_intact(
    tmp_path: Path, smtp: LocalSmtpServer
) -> None:
    runtime = email_runtime(f"sqlite:///{tmp_path / 'c.db'}", smtp)
    try:
        add_email_customer(runtime, name="王伟", locale="zh_CN")
        run_day(runtime, now=NOW)
        [got] = smtp.received
        msg = got.message
        assert msg["Subject"] == "王伟，祝您生日快乐！"
        assert msg["Content-Language"] == "zh-CN"
        for part in msg.iter_parts():
            # No 8-bit bodies: a relay without 8BITMIME must not mangle them.
            assert part["Content-Transfer-Encoding"] in ("base64", "quoted-printable")
        text = msg.get_body(("plain",))
        assert isinstance(text, EmailMessage)
        body = text.get_content()
        assert "尊敬的王伟" in body and "退订此类邮件" in body
    finally:
        runtime.close()


def test_connection_lost_after_data_is_flagged_as_possibly_sent(
    tmp_path: Path, smtp: LocalSmtpServer
) -> None:
    runtime = email_runtime(f"sqlite:///{tmp_path / 'c.db'}", smtp)
    try:
        add_email_customer(runtime)
        event = planned_event(runtime)
        smtp.drop_after_data()
        assert deliver(runtime, event.id) is Outcome.RETRY
        with runtime.sessions() as session:
            after = session.get(CareEvent, event.id)
            assert after is not None
            assert (after.status, after.error_code, after.needs_reconcile) == (
                EventStatus.PLANNED,
                "smtp-connection",
                True,
            )
        smtp.drop_after_data(False)
        assert deliver(runtime, event.id) is Outcome.SENT
        [got] = smtp.received
        assert got.message["Message-ID"].startswith("<careflow.")
    finally:
        runtime.close()


def test_maintenance_reminder_email_has_its_own_subject_and_both_parts(
    tmp_path: Path, smtp: LocalSmtpServer
) -> None:
    from datetime import date

    from careflow.testing.records import add_vehicle, add_visit

    settings = make_settings(
        f"sqlite:///{tmp_path / 'c.db'}",
        channels={"email": {"provider": "smtp"}},
        email={"host": "127.0.0.1", "port": smtp.port, "security": "none"},
        web={"secret_key": SECRET, "public_url": "https://care.example.com"},
        centers={
            "main": {
                "name": "Anxin Auto",
                "timezone": "Asia/Shanghai",
                "locale": "zh_CN",
                "email_from": "care@anxin.example.com",
            }
        },
        plugins={"maintenance": {"enabled": True}},
    )
    runtime = build_runtime(settings)
    try:
        with runtime.sessions.begin() as session:
            customer = add_customer(
                session,
                external_id="C1",
                name="王伟",
                phone=None,
                email="wang@example.org",
                email_consent=True,
                locale="zh_CN",
            )
            car = add_vehicle(session, customer, plate="沪A12345", interval_km=None)
            add_visit(session, car, day=date(2025, 11, 11))  # six months before NOW: due today
        run_day(runtime, now=NOW)
        [got] = smtp.received
        msg = got.message
        assert msg["Subject"] == "您的Camry（沪A12345）今天到了保养时间"
        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
        assert (
            text.get_content()
            .replace("\r\n", "\n")
            .startswith("尊敬的王伟：\n\n您的Camry（沪A12345）今天到了保养时间")
        )
        assert "<p>尊敬的王伟：</p>" in html.get_content()
    finally:
        runtime.close()


def test_careflow_init_writes_an_email_section_whose_smtp_settings_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from careflow.cli import main
    from careflow.config import load_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAREFLOW_CONFIG", raising=False)
    assert CliRunner().invoke(main, ["init"]).exit_code == 0
    written = (tmp_path / "careflow.toml").read_text("utf-8")
    assert load_settings(tmp_path / "careflow.toml", {}).channels["email"].provider == "console"
    assert "password =" not in written and "CAREFLOW_EMAIL__PASSWORD" in written  # secrets stay out

    # Switching to SMTP is uncommenting the [email] keys; the secrets come from the environment.
    lines = []
    for line in written.splitlines():
        if line.startswith('provider = "console"') and "prints e-mails" in line:
            line = 'provider = "smtp"'
        for key in ("host", "port", "security", "username", "from_address"):
            if line.startswith(f"# {key} = "):
                line = line.removeprefix("# ")
        lines.append(line)
    (tmp_path / "careflow.toml").write_text("\n".join(lines), "utf-8")
    settings = load_settings(
        tmp_path / "careflow.toml",
        {
            "CAREFLOW_EMAIL__PASSWORD": "relay-password",
            "CAREFLOW_WEB__SECRET_KEY": SECRET,
            "CAREFLOW_WEB__PUBLIC_URL": "https://care.example.com",
        },
    )
    assert settings.channels["email"].provider == "smtp"
    assert (settings.email.host, settings.email.port, settings.email.security) == (
        "smtp.example.com",
        587,
        "starttls",
    )
    assert settings.email.from_address == "care@example.com"
    assert settings.email.password is not None
    assert settings.email.password.get_secret_value() == "relay-password"
