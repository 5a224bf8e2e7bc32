"""Preferred channel and fallback: which channel each care event goes to, and the reason recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, select

from careflow.cli import main
from careflow.customers.import_customers import CustomerImporter
from careflow.errors import ImportDataError
from careflow.planning.plan import plan
from careflow.runtime import Runtime
from careflow.storage.models import CareEvent, Consent, Customer, EventStatus
from careflow.testing import add_customer, build_runtime, center, make_settings, parse_instant

NOW = parse_instant("2026-05-11T10:00:00+08:00")
BIRTHDAY_TODAY = (1986, 5, 11)
ALL_CONSOLE = {
    "sms": {"provider": "console"},
    "whatsapp": {"provider": "console"},
    "email": {"provider": "console"},
}

# external_id -> (card, expected channel, expected recorded reason)
MATRIX: dict[str, tuple[dict[str, Any], str | None, str]] = {
    "prefers-whatsapp": (
        {"whatsapp": "+8613900139000", "whatsapp_consent": True, "preferred_channel": "whatsapp"},
        "whatsapp",
        "preferred whatsapp",
    ),
    "no-preference": ({}, "sms", "sms: first in the center's channel order"),
    "no-phone": (
        {"phone": None, "whatsapp": "+8613900139000", "whatsapp_consent": True},
        "whatsapp",
        "sms: no phone; fell back to whatsapp",
    ),
    "no-consent-recorded": (
        {"email": "a@example.org", "email_consent": True, "_drop_sms_consent": True},
        "email",
        "sms: no marketing consent; whatsapp: no WhatsApp number; fell back to email",
    ),
    "opted-out": (
        {"sms_consent": False, "email": "b@example.org", "email_consent": True},
        "email",
        "sms: opted out of marketing; whatsapp: no WhatsApp number; fell back to email",
    ),
    "prefers-email-but-opted-out": (
        {"email": "c@example.org", "email_consent": False, "preferred_channel": "email"},
        "sms",
        "preferred email: opted out of marketing; fell back to sms",
    ),
    "prefers-whatsapp-without-number": (
        {"preferred_channel": "whatsapp", "whatsapp_consent": True},
        "sms",
        "preferred whatsapp: no WhatsApp number; fell back to sms",
    ),
    "unreachable": (
        {"phone": None},
        None,
        "unreachable: sms: no phone; whatsapp: no WhatsApp number; email: no e-mail address",
    ),
}


def runtime_with(tmp_path: Path, channels: dict[str, Any], **centers: Any) -> Runtime:
    settings = make_settings(
        f"sqlite:///{tmp_path / 'c.db'}",
        channels=channels,
        centers={"main": {"name": "Anxin Auto", "timezone": "Asia/Shanghai", "locale": "en", **centers}},
        plugins={"birthday": {"enabled": True}},
    )
    return build_runtime(settings)


def add(runtime: Runtime, external_id: str, **card: Any) -> None:
    drop_sms = card.pop("_drop_sms_consent", False)
    with runtime.sessions.begin() as session:
        customer = add_customer(session, external_id=external_id, birthday=BIRTHDAY_TODAY, **card)
        if drop_sms:
            session.execute(
                delete(Consent).where(Consent.customer_id == customer.id, Consent.channel == "sms")
            )


def planned(runtime: Runtime) -> dict[str, CareEvent]:
    plan(runtime, now=NOW)
    with runtime.sessions() as session:
        rows = session.execute(
            select(CareEvent, Customer).join(Customer, Customer.id == CareEvent.customer_id)
        )
        return {customer.external_id: event for event, customer in rows}


def test_fallback_matrix_records_channel_and_reason(tmp_path: Path) -> None:
    runtime = runtime_with(tmp_path, ALL_CONSOLE)
    try:
        for external_id, (card, _, _) in MATRIX.items():
            add(runtime, external_id, **card)
        events = planned(runtime)
        got = {key: (e.channel, e.channel_reason) for key, e in events.items()}
        assert got == {key: (channel, reason) for key, (_, channel, reason) in MATRIX.items()}
        unreachable = events["unreachable"]
        assert unreachable.status == EventStatus.SUPPRESSED
        assert unreachable.status_reason == unreachable.channel_reason
        assert unreachable.recipient is None
        assert events["no-phone"].recipient == "+8613900139000"
        assert events["opted-out"].recipient == "b@example.org"
    finally:
        runtime.close()


@pytest.mark.parametrize(
    ("channels", "reason"),
    [
        (
            {**ALL_CONSOLE, "whatsapp": {"provider": "console", "enabled": False}},
            "preferred whatsapp: channel switched off; fell back to sms",
        ),
        (
            {"sms": {"provider": "console"}, "email": {"provider": "console"}},
            "preferred whatsapp: channel not configured; fell back to sms",
        ),
    ],
    ids=["switched-off", "not-configured"],
)
def test_preferred_channel_down_falls_back(tmp_path: Path, channels: dict[str, Any], reason: str) -> None:
    runtime = runtime_with(tmp_path, channels)
    try:
        add(runtime, "W", whatsapp="+8613900139000", whatsapp_consent=True, preferred_channel="whatsapp")
        event = planned(runtime)["W"]
        assert (event.channel, event.channel_reason, event.status) == ("sms", reason, EventStatus.PLANNED)
    finally:
        runtime.close()


def test_center_channel_order_decides_the_fallback(tmp_path: Path) -> None:
    runtime = runtime_with(tmp_path, ALL_CONSOLE, channel_order=["email", "whatsapp", "sms"])
    try:
        add(runtime, "A", email="a@example.org", email_consent=True)
        add(runtime, "B", email=None)
        events = planned(runtime)
        assert (events["A"].channel, events["A"].channel_reason) == (
            "email",
            "email: first in the center's channel order",
        )
        assert (events["B"].channel, events["B"].channel_reason) == (
            "sms",
            "email: no e-mail address; whatsapp: no WhatsApp number; fell back to sms",
        )
    finally:
        runtime.close()


def test_import_and_run_json_show_the_channel_and_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "careflow.toml"
    config.write_text(
        f"""
[database]
url = "sqlite:///{tmp_path / "c.db"}"
[channels.sms]
provider = "console"
[channels.whatsapp]
provider = "console"
[channels.email]
provider = "console"
[centers.main]
name = "Anxin Auto"
timezone = "Asia/Shanghai"
locale = "en"
send_from = "00:00"  # around the clock: workers send at the real hour, while these tests pretend one
send_until = "24:00"
[plugins.birthday]
enabled = true
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("CAREFLOW_CONFIG", str(config))
    runtime = Runtime.build(make_settings(f"sqlite:///{tmp_path / 'c.db'}"), migrate_schema=True)
    runtime.close()
    csv = tmp_path / "customers.csv"
    csv.write_text(
        "external_id,name,phone,email,birthday,sms_consent,email_consent,whatsapp,whatsapp_consent,preferred_channel\n"
        "W1,Li Na,+8613800138000,li@example.org,1986-05-11,yes,yes,+8613900139000,yes,whatsapp\n"
        "E1,Wang Wei,+8613800138001,wang@example.org,1986-05-11,yes,yes,,,e-mail\n"
        "S1,Zhao Lei,,,1986-05-11,yes,no,+8613900139002,no,\n",
        encoding="utf-8",
    )
    runner = CliRunner()
    imported = runner.invoke(main, ["import", "customers", str(csv)])
    assert imported.exit_code == 0, imported.output
    result = runner.invoke(main, ["run", "--json", "--now", NOW.isoformat()])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    got = {line["customer"]: (line["channel"], line["channel_reason"], line["status"]) for line in lines}
    assert got == {
        "W1": ("whatsapp", "preferred whatsapp", "sent"),
        "E1": ("email", "preferred email", "sent"),
        "S1": (
            None,
            "unreachable: sms: no phone; whatsapp: opted out of marketing; email: no e-mail address",
            "suppressed",
        ),
    }


def test_import_reports_bad_channel_columns_by_row_and_column(tmp_path: Path) -> None:
    runtime = runtime_with(tmp_path, ALL_CONSOLE)
    try:
        text = (
            "external_id,name,whatsapp,whatsapp_consent,preferred_channel\n"
            "A,Ann,+8613900139000,yes,wechat\n"
            "B,Bob,12,maybe,sms\n"
            "C,Cai,whatsapp:+8613900139001,yes,WhatsApp\n"
        )
        with runtime.sessions() as session, pytest.raises(ImportDataError) as caught:
            CustomerImporter(session, center(session)).run_text(text)
        problems = caught.value.problems
        assert problems[0].startswith("row 2, column preferred_channel: value 'wechat': unknown channel")
        assert problems[1].startswith("row 3, column whatsapp: value '12': not a valid phone number")
        assert problems[2].startswith("row 3, column whatsapp_consent: value 'maybe': expected yes/no")
        assert len(problems) == 3
        with runtime.sessions() as session:
            assert session.scalars(select(Customer)).all() == []  # all or nothing

        ok = text.splitlines()[0] + "\n" + text.splitlines()[3].replace("WhatsApp", "whatsapp") + "\n"
        with runtime.sessions() as session:
            report = CustomerImporter(session, center(session)).run_text(ok)
            session.commit()
        assert report.created == 1
        with runtime.sessions() as session:
            cai = session.scalars(select(Customer)).one()
            assert (cai.whatsapp, cai.preferred_channel) == ("+8613900139001", "whatsapp")
            consents = {(c.channel, c.purpose): c.granted for c in session.scalars(select(Consent))}
            assert consents == {("whatsapp", "service"): True, ("whatsapp", "marketing"): True}
    finally:
        runtime.close()
