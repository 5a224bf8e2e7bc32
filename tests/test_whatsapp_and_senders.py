"""WhatsApp through the Twilio SDK against the local Twilio-compatible server, and per-center senders."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from careflow.config import Settings
from careflow.delivery.batch import deliver
from careflow.delivery.results import Outcome
from careflow.hookspecs import hookimpl
from careflow.planning.plan import plan
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import CareEvent, Customer, EventStatus
from careflow.testing import add_customer, build_runtime, make_settings, parse_instant
from careflow.testing.twilio_server import FakeTwilio, Fault
from tests.smtp_server import LocalSmtpServer

NOW = parse_instant("2026-05-11T10:00:00+08:00")
BIRTHDAY_TODAY = (1986, 5, 11)
GLOBAL_SMS = "+15005550006"
GLOBAL_WHATSAPP = "+14155238886"
CONTENT_SID = "HX" + "ab12" * 8
CALLBACK = "https://care.example.com/twilio/status"


@pytest.fixture
def smtp() -> Iterator[LocalSmtpServer]:
    with LocalSmtpServer() as server:
        yield server


def settings_for(db_url: str, fake: FakeTwilio, **sections: Any) -> Settings:
    base: dict[str, Any] = {
        "channels": {"sms": {"provider": "twilio"}, "whatsapp": {"provider": "twilio"}},
        "twilio": {
            "account_sid": fake.account_sid,
            "auth_token": fake.auth_token,
            "from_number": GLOBAL_SMS,
            "whatsapp_from": GLOBAL_WHATSAPP,
            "base_url": fake.url,
            "timeout_seconds": 2.0,
            "status_callback_url": CALLBACK,
        },
        "centers": {"main": {"name": "Anxin Auto", "timezone": "Asia/Shanghai", "locale": "en"}},
        "plugins": {"birthday": {"enabled": True}},
    }
    base.update(sections)
    return make_settings(db_url, **base)


def whatsapp_customer(runtime: Runtime, external_id: str = "W1", **kwargs: Any) -> None:
    values: dict[str, Any] = {
        "name": "Li Na",
        "phone": "+8613800138000",
        "whatsapp": "+8613900139000",
        "whatsapp_consent": True,
        "preferred_channel": "whatsapp",
        "birthday": BIRTHDAY_TODAY,
        **kwargs,
    }
    with runtime.sessions.begin() as session:
        add_customer(session, external_id=external_id, **values)


def test_whatsapp_message_goes_through_the_twilio_sdk_with_status_callback(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    runtime = build_runtime(settings_for(f"sqlite:///{tmp_path / 'c.db'}", fake_twilio))
    try:
        whatsapp_customer(runtime)
        run_day(runtime, now=NOW)
        [sent] = fake_twilio.messages
        assert sent.to == "whatsapp:+8613900139000"
        assert sent.from_ == f"whatsapp:{GLOBAL_WHATSAPP}"
        assert sent.body.startswith("Anxin Auto: Happy birthday, Li Na!")
        assert sent.status_callback == CALLBACK
        assert sent.content_sid is None
        with runtime.sessions() as session:
            event = session.scalars(select(CareEvent)).one()
        assert (event.channel, event.recipient, event.status) == ("whatsapp", "+8613900139000", "sent")
        assert event.channel_reason == "preferred whatsapp"
        assert event.provider_message_id == sent.sid
    finally:
        runtime.close()


def test_whatsapp_content_template_sends_content_sid_and_variables(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    overrides = tmp_path / "templates"
    (overrides / "birthday").mkdir(parents=True)
    (overrides / "birthday" / "whatsapp.en.toml").write_text(
        f'content_sid = "{CONTENT_SID}"\n'
        '[variables]\n1 = "{{ customer.name }}"\n2 = "{{ center.name }}"\n',
        encoding="utf-8",
    )
    settings = settings_for(f"sqlite:///{tmp_path / 'c.db'}", fake_twilio, templates={"dir": str(overrides)})
    runtime = build_runtime(settings)
    try:
        whatsapp_customer(runtime)
        run_day(runtime, now=NOW)
        [sent] = fake_twilio.messages
        assert sent.content_sid == CONTENT_SID
        assert json.loads(sent.content_variables or "") == {"1": "Li Na", "2": "Anxin Auto"}
        assert sent.body == ""  # the approved template's text is Twilio's to fill in
        with runtime.sessions() as session:
            event = session.scalars(select(CareEvent)).one()
        assert event.status == EventStatus.SENT
        assert event.body is not None and "Li Na" in event.body  # the text we record for people
    finally:
        runtime.close()


def test_broken_content_template_fails_the_event_naming_the_file(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    overrides = tmp_path / "templates"
    (overrides / "birthday").mkdir(parents=True)
    (overrides / "birthday" / "whatsapp.en.toml").write_text(
        f'content_sid = "{CONTENT_SID}"\n[variables]\n1 = "{{{{ customer.nickname }}}}"\n', encoding="utf-8"
    )
    settings = settings_for(f"sqlite:///{tmp_path / 'c.db'}", fake_twilio, templates={"dir": str(overrides)})
    runtime = build_runtime(settings)
    try:
        whatsapp_customer(runtime)
        plan(runtime, now=NOW)
        with runtime.sessions() as session:
            event_id = session.scalars(select(CareEvent.id)).one()
        assert deliver(runtime, event_id) is Outcome.FAILED
        with runtime.sessions() as session:
            event = session.get(CareEvent, event_id)
            assert event is not None and event.error_code == "template"
            assert "birthday/whatsapp.en.toml: variable 1" in (event.status_reason or "")
            assert "nickname" in (event.status_reason or "")
        assert fake_twilio.messages == []
    finally:
        runtime.close()


class CountingContextPlugin:
    """A plugin whose template context is costly (a look-up per event): it counts its calls."""

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}

    @hookimpl
    def careflow_template_context(self, event: CareEvent, customer: Customer) -> dict[str, object]:
        self.calls[event.id] = self.calls.get(event.id, 0) + 1
        return {"age": 18}  # the birthday plugin's own variable, as a plugin may refine it


@pytest.mark.parametrize("approved_template", [True, False], ids=["content-template", "free-text"])
def test_a_whatsapp_event_asks_the_plugins_for_its_template_context_once(
    tmp_path: Path, fake_twilio: FakeTwilio, approved_template: bool
) -> None:
    """The body and the approved template's variables share one template context per event."""
    overrides = tmp_path / "templates"
    (overrides / "birthday").mkdir(parents=True)
    (overrides / "birthday" / "whatsapp.en.j2").write_text("Happy {{ age }}th birthday!", encoding="utf-8")
    if approved_template:
        (overrides / "birthday" / "whatsapp.en.toml").write_text(
            f'content_sid = "{CONTENT_SID}"\n[variables]\n1 = "{{{{ age }}}}"\n', encoding="utf-8"
        )
    body = "Happy 18th birthday! Reply STOP to opt out"  # the marketing footer added
    counter = CountingContextPlugin()
    settings = settings_for(f"sqlite:///{tmp_path / 'c.db'}", fake_twilio, templates={"dir": str(overrides)})
    runtime = build_runtime(settings, extra_plugins=[counter])
    try:
        whatsapp_customer(runtime, "W1")
        whatsapp_customer(runtime, "W2", whatsapp="+8613900139001", phone="+8613800138001")
        run_day(runtime, now=NOW)
        with runtime.sessions() as session:
            events = session.scalars(select(CareEvent).order_by(CareEvent.id)).all()
        assert [(e.channel, e.status, e.body) for e in events] == [("whatsapp", EventStatus.SENT, body)] * 2
        assert counter.calls == {event.id: 1 for event in events}
        sent = fake_twilio.messages
        assert len(sent) == 2
        if approved_template:
            assert all(json.loads(m.content_variables or "") == {"1": "18"} for m in sent)
        else:
            assert all(m.body == body and m.content_sid is None for m in sent)
    finally:
        runtime.close()


@pytest.mark.parametrize(
    ("fault", "outcome", "status"),
    [
        (Fault(status=400, code=63016), Outcome.FAILED, EventStatus.FAILED),
        (Fault(status=400, code=63003), Outcome.FAILED, EventStatus.FAILED),
        (Fault(status=429, code=63018), Outcome.RETRY, EventStatus.PLANNED),
    ],
)
def test_whatsapp_errors_use_the_same_classes(
    tmp_path: Path, fake_twilio: FakeTwilio, fault: Fault, outcome: Outcome, status: EventStatus
) -> None:
    runtime = build_runtime(settings_for(f"sqlite:///{tmp_path / 'c.db'}", fake_twilio))
    try:
        whatsapp_customer(runtime)
        fake_twilio.fail_recipient("whatsapp:+8613900139000", fault)
        plan(runtime, now=NOW)
        with runtime.sessions() as session:
            event_id = session.scalars(select(CareEvent.id)).one()
        assert deliver(runtime, event_id) is outcome
        with runtime.sessions() as session:
            event = session.get(CareEvent, event_id)
            assert event is not None
            assert (event.status, event.error_code) == (status, str(fault.code))
    finally:
        runtime.close()


def test_two_centers_send_under_their_own_senders(
    tmp_path: Path, fake_twilio: FakeTwilio, smtp: LocalSmtpServer
) -> None:
    service_sid = "MG" + "0f" * 16
    settings = settings_for(
        f"sqlite:///{tmp_path / 'c.db'}",
        fake_twilio,
        channels={
            "sms": {"provider": "twilio"},
            "whatsapp": {"provider": "twilio"},
            "email": {"provider": "smtp"},
        },
        email={
            "host": "127.0.0.1",
            "port": smtp.port,
            "security": "none",
            "from_address": "care@group.example",
        },
        web={"secret_key": "k" * 32, "public_url": "https://care.example.com"},
        centers={
            "pudong": {
                "name": "Anxin Pudong",
                "timezone": "Asia/Shanghai",
                "locale": "en",
                "address": "88 Century Avenue, Shanghai",
                "sms_from": "+8613000000001",
                "whatsapp_from": "+8613000000002",
                "email_from": "pudong@anxin.example",
            },
            "tianhe": {
                "name": "Anxin Tianhe",
                "timezone": "Asia/Shanghai",
                "locale": "en",
                "address": "1 Tianhe Road, Guangzhou",
                "messaging_service_sid": service_sid,
                "whatsapp_from": "+8613000000003",
                "email_from": "tianhe@anxin.example",
            },
            # No senders of its own: the global [twilio] and [email] senders.
            "outlet": {"name": "Anxin Outlet", "timezone": "Asia/Shanghai", "locale": "en"},
        },
    )
    runtime = build_runtime(settings)
    try:
        with runtime.sessions.begin() as session:
            for c, code in enumerate(("pudong", "tianhe", "outlet")):
                for n, channel in enumerate(("sms", "whatsapp", "email")):
                    add_customer(
                        session,
                        external_id=f"{code}-{channel}",
                        center_code=code,
                        phone=f"+861380013{c}{n}00",
                        whatsapp=f"+861390013{c}{n}00",
                        email=f"{code}-{channel}@example.org",
                        whatsapp_consent=True,
                        email_consent=True,
                        preferred_channel=channel,
                        birthday=BIRTHDAY_TODAY,
                    )
        run_day(runtime, now=NOW)

        with runtime.sessions() as session:
            events = {
                customer.external_id: event
                for event, customer in session.execute(
                    select(CareEvent, Customer).join(Customer, Customer.id == CareEvent.customer_id)
                )
            }
        assert {e.status for e in events.values()} == {"sent"}
        by_to = {m.to: m for m in fake_twilio.messages}

        def twilio_sender(external_id: str) -> tuple[str | None, str | None]:
            event = events[external_id]
            prefix = "whatsapp:" if event.channel == "whatsapp" else ""
            message = by_to[prefix + (event.recipient or "")]
            return message.from_, message.messaging_service_sid

        assert twilio_sender("pudong-sms") == ("+8613000000001", None)
        assert twilio_sender("tianhe-sms") == (None, service_sid)
        assert twilio_sender("outlet-sms") == (GLOBAL_SMS, None)
        assert twilio_sender("pudong-whatsapp") == ("whatsapp:+8613000000002", None)
        assert twilio_sender("tianhe-whatsapp") == ("whatsapp:+8613000000003", None)
        assert twilio_sender("outlet-whatsapp") == (f"whatsapp:{GLOBAL_WHATSAPP}", None)

        mails = {r.rcpt_tos[0]: r for r in smtp.received}
        for code, sender, name in (
            ("pudong", "pudong@anxin.example", "Anxin Pudong"),
            ("tianhe", "tianhe@anxin.example", "Anxin Tianhe"),
            ("outlet", "care@group.example", "Anxin Outlet"),
        ):
            mail = mails[f"{code}-email@example.org"]
            assert mail.mail_from == sender
            assert mail.message["From"].addresses[0].display_name == name
            assert name in (events[f"{code}-email"].body or "")
        assert "88 Century Avenue, Shanghai" in (events["pudong-email"].body or "")
        assert "1 Tianhe Road, Guangzhou" in (events["tianhe-email"].body or "")
    finally:
        runtime.close()
