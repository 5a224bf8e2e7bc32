"""Opt-outs that stick: a customer's own withdrawal is never undone by an import, on any channel.

Through the documented surfaces: signed Twilio webhooks on a real HTTP server, the
`careflow import customers` and `careflow consent` commands, the console's import and card.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from careflow.care import Purpose
from careflow.channels.base import OutgoingMessage, SendResult
from careflow.cli import main
from careflow.customers.import_customers import CustomerImporter
from careflow.delivery.batch import deliver_many
from careflow.delivery.results import Outcome
from careflow.planning.plan import plan
from careflow.policies.consent import REPLY_STOP, history, record_consent
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import AddressOptOut, Center, Customer, EventStatus
from careflow.testing import add_customer, parse_instant
from careflow.testing.twilio_server import FakeTwilio
from tests.policy_support import SENDER, consents, events, inbound, serving, signed_post, twilio_runtime

# A birthday (marketing) greeting is due for every card below on this day.
NOW = parse_instant("2026-05-11T10:00:00+08:00")
PHONE = "+8613800138001"


@pytest.fixture
def runtime(db_url: str, fake_twilio: FakeTwilio, tmp_path: Path) -> Iterator[Runtime]:
    rt = twilio_runtime(db_url, fake_twilio)
    yield rt
    rt.close()


def write_customers(path: Path, *rows: dict[str, str]) -> Path:
    columns = ["external_id", "name", "phone", "birthday", "locale", "sms_consent"]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return path


def card(external_id: str, phone: str = PHONE, consent: str = "yes") -> dict[str, str]:
    return {
        "external_id": external_id,
        "name": f"客户{external_id}",
        "phone": phone,
        "birthday": "1990-05-11",
        "locale": "zh_CN",
        "sms_consent": consent,
    }


def import_file(runtime: Runtime, path: Path) -> list[str]:
    """The center's usual import (what `careflow import customers` and the console run); its notes."""
    with runtime.sessions() as session:
        center = session.scalars(select(Center)).one()
        report = CustomerImporter(session, center).run(path)
        session.commit()
    return report.kept_withdrawn


def customer_id(runtime: Runtime, external_id: str) -> int:
    with runtime.sessions() as session:
        found = session.scalar(select(Customer.id).where(Customer.external_id == external_id))
        assert found is not None
        return found


def test_a_reimport_never_regrants_consent_the_customer_withdrew_by_stop(
    runtime: Runtime, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    usual_file = write_customers(tmp_path / "customers.csv", card("C1"))
    import_file(runtime, usual_file)
    with serving(runtime) as base:
        status, _ = inbound(base, fake_twilio.auth_token, PHONE, "退订", "SMstop1")
        assert status == 200
    notes = import_file(runtime, usual_file)  # the same file, still saying sms_consent=yes

    who = customer_id(runtime, "C1")
    assert consents(runtime, who) == {("sms", "service"): False, ("sms", "marketing"): False}
    assert len(notes) == 1 and notes[0].startswith("row 2, column sms_consent: customer C1: sms consent")
    assert "stays withdrawn" in notes[0] and "reply:STOP" in notes[0]
    run_day(runtime, now=NOW)
    assert fake_twilio.messages == []  # the birthday greeting was not sent
    (event,) = events(runtime)
    assert event.status == EventStatus.SUPPRESSED and "opted out of marketing" in (event.status_reason or "")
    with runtime.sessions() as session:
        changes = [(c.source, c.granted, c.actor) for c in reversed(history(session, who))]
    assert changes[:2] == [("import", True, "import of customers.csv")] * 2
    assert changes[2:] == [(REPLY_STOP, False, "customer")] * 2


def test_start_from_the_customer_lifts_the_withdrawal_and_the_import_keeps_it(
    runtime: Runtime, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    usual_file = write_customers(tmp_path / "customers.csv", card("C1"))
    import_file(runtime, usual_file)
    with serving(runtime) as base:
        inbound(base, fake_twilio.auth_token, PHONE, "STOP", "SMstop1")
        inbound(base, fake_twilio.auth_token, PHONE, "START", "SMstart1")
    assert import_file(runtime, usual_file) == []
    assert consents(runtime, customer_id(runtime, "C1"))[("sms", "marketing")] is True
    run_day(runtime, now=NOW)
    assert [m.to for m in fake_twilio.messages] == [PHONE]


def test_a_card_imported_after_its_number_sent_stop_is_not_granted_consent(
    runtime: Runtime, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    # The number texted STOP before any card had it (or the card was re-created under a new id).
    with serving(runtime) as base:
        inbound(base, fake_twilio.auth_token, PHONE, "STOP", "SMstop1")
    notes = import_file(runtime, write_customers(tmp_path / "new.csv", card("NEW")))
    assert len(notes) == 1 and "opted out from" in notes[0]
    assert consents(runtime, customer_id(runtime, "NEW")) == {
        ("sms", "service"): False,
        ("sms", "marketing"): False,
    }
    with runtime.sessions() as session:  # kept hashed: no phone number in the opt-out table
        stored = session.scalars(select(AddressOptOut)).all()
    assert stored and all(PHONE not in row.address_hash and len(row.address_hash) == 64 for row in stored)
    run_day(runtime, now=NOW)
    assert fake_twilio.messages == []


def test_an_unsubscribe_link_sticks_against_the_import(runtime: Runtime, tmp_path: Path) -> None:
    with runtime.sessions.begin() as session:
        who = add_customer(
            session, external_id="E1", phone=None, email="a@example.com", email_consent=True
        ).id
        record_consent(session, who, "email", granted=False, source="unsubscribe-link", actor="customer")
    path = tmp_path / "emails.csv"
    path.write_text("external_id,name,email,email_consent\nE1,Ann,a@example.com,yes\n", encoding="utf-8")
    notes = import_file(runtime, path)
    assert len(notes) == 1 and "unsubscribe-link" in notes[0]
    assert consents(runtime, who)[("email", "marketing")] is False


def cli(*args: str, env: dict[str, str]) -> Result:
    return CliRunner().invoke(main, list(args), env=env, terminal_width=200)


def test_only_an_evidenced_dated_reconsent_lifts_a_stop_and_it_is_kept_in_the_history(
    runtime: Runtime, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    config = tmp_path / "careflow.toml"
    config.write_text(
        f'[database]\nurl = "{runtime.settings.database.url}"\n'
        '[centers.main]\nname = "Anxin Auto"\ntimezone = "Asia/Shanghai"\nlocale = "zh_CN"\n',
        encoding="utf-8",
    )
    env = {"CAREFLOW_CONFIG": str(config)}
    import_file(runtime, write_customers(tmp_path / "customers.csv", card("C1")))
    who = customer_id(runtime, "C1")
    with runtime.sessions.begin() as session:
        record_consent(
            session,
            who,
            "sms",
            granted=False,
            source=REPLY_STOP,
            actor="customer",
            effective_at=parse_instant("2026-05-01T15:00:00+08:00"),
        )

    missing = cli("consent", "grant", "C1", "--channel", "sms", "--date", "2026-05-02", env=env)
    assert missing.exit_code == 2 and "--evidence" in missing.output
    too_early = cli(
        "consent", "grant", "C1", "--channel", "sms", "--date", "2026-04-30",
        "--evidence", "signed form", env=env,
    )  # fmt: skip
    assert too_early.exit_code == 1
    assert "withdrew sms consent on 2026-05-01" in too_early.output
    assert consents(runtime, who)[("sms", "marketing")] is False

    granted = cli(
        "consent", "grant", "C1", "--channel", "sms", "--date", "2026-05-03",
        "--evidence", "signed form at the service desk, ref 2291", "--by", "wang@anxin.example", env=env,
    )  # fmt: skip
    assert granted.exit_code == 0, granted.output
    assert consents(runtime, who) == {("sms", "service"): True, ("sms", "marketing"): True}
    shown = cli("consent", "show", "C1", env=env)
    assert shown.exit_code == 0, shown.output
    assert (
        "re-consent" in shown.output and "ref 2291" in shown.output and "wang@anxin.example" in shown.output
    )
    assert "reply:STOP" in shown.output and "import of customers.csv" in shown.output


def test_a_customers_request_to_stop_recorded_by_staff_also_sticks(runtime: Runtime, tmp_path: Path) -> None:
    usual_file = write_customers(tmp_path / "customers.csv", card("C1"))
    import_file(runtime, usual_file)
    who = customer_id(runtime, "C1")
    with runtime.sessions.begin() as session:
        record_consent(
            session, who, "sms", [Purpose.MARKETING], granted=False, source="customer-request", actor="staff"
        )
    assert len(import_file(runtime, usual_file)) == 1
    assert consents(runtime, who) == {("sms", "service"): True, ("sms", "marketing"): False}


def test_a_stop_over_what_the_file_said_is_recorded_as_the_customers_own(
    runtime: Runtime, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    # The file said "no"; the customer also texts STOP; a later file says "yes": still no.
    import_file(runtime, write_customers(tmp_path / "a.csv", card("C1", consent="no")))
    with serving(runtime) as base:
        inbound(base, fake_twilio.auth_token, PHONE, "STOP", "SMstop1")
    assert len(import_file(runtime, write_customers(tmp_path / "b.csv", card("C1", consent="yes")))) == 1
    assert consents(runtime, customer_id(runtime, "C1"))[("sms", "marketing")] is False


def test_a_whatsapp_stop_is_matched_on_the_whatsapp_number(runtime: Runtime, fake_twilio: FakeTwilio) -> None:
    with runtime.sessions.begin() as session:
        both = add_customer(
            session,
            external_id="W1",
            phone="+8613800138001",
            whatsapp="+8613900139001",
            whatsapp_consent=True,
        ).id
        only = add_customer(
            session, external_id="W2", phone=None, whatsapp="+8613900139002", whatsapp_consent=True
        ).id
        sms_twin = add_customer(session, external_id="S1", phone="+8613900139001").id  # SMS only
    with serving(runtime) as base:
        for sid, number in (("SMw1", "+8613900139001"), ("SMw2", "+8613900139002")):
            status, _ = inbound(base, fake_twilio.auth_token, f"whatsapp:{number}", "STOP", sid)
            assert status == 200
    assert consents(runtime, both)[("whatsapp", "marketing")] is False
    assert consents(runtime, both)[("sms", "marketing")] is True  # the SMS phone is another number
    assert consents(runtime, only)[("whatsapp", "marketing")] is False
    # A WhatsApp STOP withdraws WhatsApp, not the SMS consent of a card whose phone is that number.
    assert {k: v for k, v in consents(runtime, sms_twin).items() if k[0] != "email"} == {
        ("sms", "service"): True,
        ("sms", "marketing"): True,
    }


def test_help_on_whatsapp_answers_with_the_whatsapp_cards_center(
    runtime: Runtime, fake_twilio: FakeTwilio
) -> None:
    runtime.settings.centers["main"].help_text = "Anxin Auto: call 400-000-0000."
    with runtime.sessions.begin() as session:
        add_customer(session, external_id="W2", phone=None, whatsapp="+8613900139002", whatsapp_consent=True)
    with serving(runtime) as base:
        params = {"MessageSid": "SMh1", "From": "whatsapp:+8613900139002", "To": SENDER, "Body": "HELP"}
        status, body = signed_post(f"{base}/webhooks/twilio/inbound", params, fake_twilio.auth_token)
    assert status == 200 and "400-000-0000" in body


def test_a_stop_recorded_while_a_batch_waits_for_its_turn_is_honoured(
    runtime: Runtime, fake_twilio: FakeTwilio
) -> None:
    """Consent is re-checked just before each provider call, not once per batch.

    The channel is the real Twilio SDK against the fake Twilio server; the wrapper only lets
    the customer's STOP arrive, through the real webhook, between two sends of one batch.
    """
    with runtime.sessions.begin() as session:
        ids = [
            add_customer(session, external_id=f"B{i}", phone=f"+861380013810{i}", birthday=(1990, 5, 11)).id
            for i in range(4)
        ]
    plan(runtime, now=NOW)
    stopper = ids[2]
    channel = runtime.channel("sms")
    original = channel.send
    with serving(runtime) as base:

        def send_then_the_customer_texts_stop(message: OutgoingMessage) -> SendResult:
            """The customer's STOP reaches the webhook while the batch is busy with other sends."""
            result = original(message)
            if len(fake_twilio.messages) == 1:
                status, _ = inbound(base, fake_twilio.auth_token, "+8613800138102", "STOP", "SMstop1")
                assert status == 200
            return result

        channel.send = send_then_the_customer_texts_stop  # type: ignore[method-assign]
        result = deliver_many(runtime, [e.id for e in events(runtime)], now=NOW + timedelta(minutes=1))
    sent_to = sorted(m.to for m in fake_twilio.messages)
    assert sent_to == ["+8613800138100", "+8613800138101", "+8613800138103"]
    stopped = next(e for e in events(runtime) if e.customer_id == stopper)
    assert stopped.status == EventStatus.SUPPRESSED
    assert "re-checked just before the provider call" in (stopped.status_reason or "")
    assert result.outcomes[stopped.id] is Outcome.SUPPRESSED
