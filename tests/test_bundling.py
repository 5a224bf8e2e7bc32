"""Bundling and configurable priorities: one thoughtful message instead of three, and who wins a cap."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from careflow.care import Purpose
from careflow.customers.points import PointsRules
from careflow.planning.plan import plan
from careflow.policies.bundling import BUNDLE_SAMPLES, bundle_key
from careflow.policies.consent import record_consent
from careflow.rendering.lint import lint_refusal
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import CareEvent, EventStatus
from careflow.testing import add_customer, build_runtime, center, make_settings, parse_instant
from careflow.testing.records import add_vehicle, add_visit
from careflow.testing.twilio_server import FakeTwilio
from tests.care_plugins_for_tests import EveryoneToday, ExtraCarePlugins
from tests.policy_support import events, twilio_runtime

DAY = date(2026, 6, 15)
NOW = parse_instant("2026-06-15T10:00:00+08:00")
THREE = {name: {"enabled": True} for name in ("birthday", "maintenance", "points")}


def runtime_for(tmp_path: Path, fake_twilio: FakeTwilio, **center: Any) -> Runtime:
    return twilio_runtime(f"sqlite:///{tmp_path / 'b.db'}", fake_twilio, plugins=THREE, center=center)


def add_three_occasions(runtime: Runtime, external_id: str = "C1", locale: str = "en", **kw: Any) -> int:
    """A customer whose birthday, service-soon reminder and points expiry all fall on DAY."""
    with runtime.sessions.begin() as session:
        customer = add_customer(
            session, external_id=external_id, name="Ann Lee", birthday=(1988, 6, 15), locale=locale, **kw
        )
        car = add_vehicle(session, customer, plate=f"沪A{external_id}", model="Camry")
        # 80 points expiring 2026-07-15 (told 30 days before, on DAY) ...
        add_visit(session, car, day=date(2024, 7, 15), amount=800, kind="repair", points=PointsRules())
        # ... and service due 2026-06-22, reminded seven days before, on DAY.
        add_visit(session, car, day=date(2025, 12, 22))
        return customer.id


def test_three_occasions_become_one_message_and_a_rerun_sends_nothing(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    runtime = runtime_for(tmp_path, fake_twilio, bundling=True)
    try:
        customer_id = add_three_occasions(runtime)
        run_day(runtime, now=NOW)
        assert len(fake_twilio.messages) == 1
        body = fake_twilio.messages[0].body
        assert "Happy birthday on turning 38!" in body
        assert "Camry 沪AC1 is due for service on" in body
        assert "80 of your points expire on" in body
        assert body.endswith("Reply STOP to opt out")  # the bundle is marketing: footer kept
        rows = {e.plugin: e for e in events(runtime)}
        key = bundle_key("sms", DAY.isoformat(), customer_id)
        assert set(rows) == {"birthday", "maintenance", "points", "bundle"}
        for part in ("birthday", "maintenance", "points"):
            assert rows[part].status == EventStatus.SUPPRESSED
            assert rows[part].status_reason == f"bundled into {key}"
        bundle = rows["bundle"]
        assert bundle.idempotency_key == key and bundle.status == EventStatus.SENT
        assert bundle.purpose == "marketing" and bundle.priority == 80  # maintenance, the highest
        # Highest priority first, each part with its own context.
        assert [p["plugin"] for p in bundle.context["parts"]] == ["maintenance", "points", "birthday"]
        assert bundle.context["parts"][2]["context"] == {"age": 38}
        # Re-running the day records and sends nothing more.
        again = run_day(runtime, now=parse_instant("2026-06-15T16:00:00+08:00")).report
        assert again.new == 0 and len(fake_twilio.messages) == 1 and len(events(runtime)) == 4
    finally:
        runtime.close()


def test_without_bundling_each_occasion_is_its_own_message(tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    runtime = runtime_for(tmp_path, fake_twilio, frequency_cap=0)
    try:
        add_three_occasions(runtime)
        run_day(runtime, now=NOW)
        assert len(fake_twilio.messages) == 3
        assert {e.plugin for e in events(runtime)} == {"birthday", "maintenance", "points"}
        assert all(e.status == EventStatus.SENT for e in events(runtime))
    finally:
        runtime.close()


def test_a_bundle_counts_as_one_message_for_the_frequency_cap(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    runtime = runtime_for(tmp_path, fake_twilio, bundling=True, frequency_cap=1)
    try:
        add_three_occasions(runtime)
        run_day(runtime, now=NOW)
        assert len(fake_twilio.messages) == 1  # a cap of one still lets all three parts through
        assert {e.plugin: e.status for e in events(runtime)}["bundle"] == EventStatus.SENT
    finally:
        runtime.close()


def test_different_days_and_channels_are_not_bundled(tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    plugins = ExtraCarePlugins(tmp_path / "tpl", EveryoneToday("notice_a", 30), EveryoneToday("notice_b", 20))
    center = {"name": "Anxin Auto", "email_from": "care@example.com", "address": "88 Century Avenue"}
    settings = make_settings(
        f"sqlite:///{tmp_path / 'd.db'}",
        channels={"sms": {"provider": "console"}, "email": {"provider": "smtp"}},
        email={"host": "127.0.0.1", "port": 2525, "security": "none"},
        web={
            "secret_key": "a-test-secret-that-is-long-enough-0123456789",
            "public_url": "https://care.example.com",
        },
        centers={"main": {**center, "bundling": True, "frequency_cap": 0}},
        plugins={"notice_a": {"enabled": True}, "notice_b": {"enabled": True}, "birthday": {"enabled": True}},
    )
    runtime = build_runtime(settings, extra_plugins=[plugins])
    try:
        with runtime.sessions.begin() as session:
            # SMS for service only: the notices (service) go by SMS, the birthday (marketing) by e-mail.
            customer = add_customer(
                session, external_id="A", birthday=(1990, 6, 15), email="a@example.com", email_consent=True
            )
            record_consent(session, customer.id, "sms", [Purpose.MARKETING], granted=False, source="test")
        for day in (DAY, date(2026, 6, 16)):
            plan(runtime, now=NOW, day=day)
        rows = events(runtime)
        bundles = [e for e in rows if e.plugin == "bundle"]
        # One bundle per day for the two SMS notices; never across days, never across channels.
        assert sorted((e.due_date, e.channel) for e in bundles) == [(DAY, "sms"), (date(2026, 6, 16), "sms")]
        assert all(len(e.context["parts"]) == 2 for e in bundles)
        birthday = next(e for e in rows if e.plugin == "birthday")
        assert (birthday.channel, birthday.status) == ("email", EventStatus.PLANNED)
    finally:
        runtime.close()


def test_a_configured_priority_changes_who_wins_the_cap(tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    plugins = ExtraCarePlugins(tmp_path / "tpl", EveryoneToday("warranty", 90), EveryoneToday("loyalty", 50))
    runtime = twilio_runtime(
        f"sqlite:///{tmp_path / 'p.db'}",
        fake_twilio,
        extra_plugins=[plugins],
        plugins={"warranty": {"enabled": True}, "loyalty": {"enabled": True, "priority": 95}},
        center={"frequency_cap": 1},
    )
    try:
        with runtime.sessions.begin() as session:
            add_customer(session, external_id="A", locale="zh_CN")
        run_day(runtime, now=NOW)
        rows = {e.plugin: e for e in events(runtime)}
        assert rows["loyalty"].status == EventStatus.SENT and rows["loyalty"].priority == 95
        assert rows["warranty"].status == EventStatus.SUPPRESSED
        assert "gave way to loyalty (priority 95) (this: warranty, priority 90)" in str(
            rows["warranty"].status_reason
        )
        assert len(fake_twilio.messages) == 1
    finally:
        runtime.close()


def test_default_priorities_follow_the_documented_order(tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    runtime = runtime_for(tmp_path, fake_twilio)
    try:
        plugins = runtime.registry.care_plugins
        order = ["weather", "maintenance", "survey", "points", "birthday", "holidays", "winback"]
        priorities = [plugins[name].priority for name in order]
        assert priorities == sorted(priorities, reverse=True) and len(set(priorities)) == len(priorities)
    finally:
        runtime.close()


@pytest.mark.parametrize(
    ("locale", "channel", "expected"),
    [
        ("en", "sms", ["Happy birthday on turning 38!", "Camry 沪A·12345", "V-7Q2K9"]),
        ("zh_CN", "sms", ["祝您38岁生日快乐！", "Camry（沪A·12345）", "代金券V-7Q2K9"]),
        ("en", "email", ["Dear Alexandra", "Happy birthday on turning 38!", "V-7Q2K9"]),
        ("zh_CN", "email", ["尊敬的欧阳", "祝您38岁生日快乐！", "代金券V-7Q2K9"]),
    ],
)
def test_bundle_templates_render_every_part_in_both_locales(
    tmp_path: Path, locale: str, channel: str, expected: list[str]
) -> None:
    runtime = build_runtime(make_settings(f"sqlite:///{tmp_path / 'r.db'}"))
    try:
        customer = {"name": "Alexandra" if locale == "en" else "欧阳文华"}
        rendered = runtime.templates.render(
            "bundle",
            channel,
            locale=locale,
            center_code="main",
            center_locale="zh_CN",
            variables={"customer": customer, "center": {"name": "Anxin Auto"}, **BUNDLE_SAMPLES},
            marketing=True,
        )
        for text in expected:
            assert text in rendered.body
        if channel == "sms":
            assert "\n" not in rendered.body  # one concise paragraph
        # Lint, as delivery applies it before every send, accepts the shipped bundle template.
        with runtime.sessions() as session:
            event = CareEvent(plugin="bundle", template="bundle", channel=channel, locale=locale)
            assert lint_refusal(runtime, event, center(session)) is None
    finally:
        runtime.close()


def test_occasions_that_turn_up_after_the_bundle_are_sent_on_their_own(tmp_path: Path) -> None:
    """The day's bundle has gone: late parts must neither join it (lost) nor wait (dropped)."""
    url = f"sqlite:///{tmp_path / 'late.db'}"

    def runtime_with(*names: str) -> Runtime:
        plugins = ExtraCarePlugins(tmp_path / "tpl", *(EveryoneToday(n, 30 + i) for i, n in enumerate(names)))
        settings = make_settings(
            url,
            channels={"sms": {"provider": "console"}},
            centers={"main": {"name": "Anxin Auto", "bundling": True, "frequency_cap": 0}},
            plugins={name: {"enabled": True} for name in names},
        )
        return build_runtime(settings, extra_plugins=[plugins])

    first = runtime_with("notice_a", "notice_b")
    try:
        with first.sessions.begin() as session:
            add_customer(session, external_id="A")
        plan(first, now=NOW, day=DAY)
    finally:
        first.close()
    later = runtime_with("notice_a", "notice_b", "notice_c", "notice_d")  # two more plugins enabled
    try:
        report = plan(later, now=NOW, day=DAY)
        assert report.new == 2
        rows = {e.plugin: e for e in events(later)}
        assert [p["plugin"] for p in rows["bundle"].context["parts"]] == ["notice_b", "notice_a"]
        assert rows["notice_c"].status == rows["notice_d"].status == EventStatus.PLANNED
        assert len([e for e in events(later) if e.plugin == "bundle"]) == 1
    finally:
        later.close()
