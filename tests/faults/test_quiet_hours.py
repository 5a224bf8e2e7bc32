"""Quiet hours: events planned at 22:00 local wait in the database and go out at 09:00 local."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from careflow.policies.quiet_hours import release_deferred
from careflow.service.care_run import run_day
from careflow.storage.models import EventStatus
from careflow.testing import add_customer, parse_instant
from careflow.testing.twilio_server import FakeTwilio
from tests.care_plugins_for_tests import EveryoneToday, ExtraCarePlugins
from tests.policy_support import events, twilio_runtime

EVENING = parse_instant("2026-05-11T22:00:00+08:00")


def test_events_planned_at_22_go_out_at_09_local_and_not_before(db_url: str, fake_twilio: FakeTwilio) -> None:
    runtime = twilio_runtime(db_url, fake_twilio)
    try:
        with runtime.sessions.begin() as session:
            add_customer(
                session, external_id="SH", phone="+8613800000001", birthday=(1990, 5, 11), locale="zh_CN"
            )
            # A customer in Berlin: 22:00 in Shanghai is 16:00 there, inside the window.
            add_customer(
                session,
                external_id="BER",
                phone="+4915100000002",
                birthday=(1990, 5, 11),
                locale="en",
                timezone="Europe/Berlin",
            )

        first = run_day(runtime, now=EVENING)
        assert first.report.new == 2
        assert [m.to for m in fake_twilio.messages] == ["+4915100000002"]
        shanghai = next(e for e in events(runtime) if e.recipient == "+8613800000001")
        assert shanghai.status == EventStatus.DEFERRED
        assert shanghai.not_before == parse_instant("2026-05-12T09:00:00+08:00")
        assert "quiet hours (09:00-20:00 Asia/Shanghai)" in (shanghai.status_reason or "")

        # A run (or a restart) at 08:59 sends nothing more.
        early = run_day(runtime, now=parse_instant("2026-05-12T08:59:00+08:00"))
        assert early.released == 0 and len(fake_twilio.messages) == 1

        # At 09:00 the deferred greeting is released and sent, once.
        opened = run_day(runtime, now=parse_instant("2026-05-12T09:00:00+08:00"))
        assert opened.released == 1
        assert sorted(m.to for m in fake_twilio.messages) == ["+4915100000002", "+8613800000001"]
        run_day(runtime, now=parse_instant("2026-05-12T10:00:00+08:00"))
        assert len(fake_twilio.messages) == 2
        assert {e.status for e in events(runtime)} == {EventStatus.SENT}
    finally:
        runtime.close()


def test_an_occasion_that_passes_before_the_window_opens_expires_with_a_reason(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    plugins = ExtraCarePlugins(
        tmp_path / "tpl",
        EveryoneToday("storm", 80, valid_for=timedelta(hours=3)),  # gone by 01:00
        EveryoneToday("rain", 70, valid_for=timedelta(hours=20)),  # still relevant at 09:00
    )
    runtime = twilio_runtime(
        f"sqlite:///{tmp_path / 'c.db'}",
        fake_twilio,
        extra_plugins=[plugins],
        plugins={"storm": {"enabled": True}, "rain": {"enabled": True}},
        center={"frequency_cap": 0},
    )
    try:
        with runtime.sessions.begin() as session:
            add_customer(session, external_id="SH", phone="+8613800000001", locale="zh_CN")
        run_day(runtime, now=EVENING)
        by_plugin = {e.plugin: e for e in events(runtime)}
        assert by_plugin["storm"].status == EventStatus.EXPIRED
        assert "expires at" in (by_plugin["storm"].status_reason or "")
        assert by_plugin["rain"].status == EventStatus.DEFERRED

        # The rain alert is withdrawn overnight by a shorter validity: it expires at release.
        with runtime.sessions.begin() as session:
            from careflow.storage.models import CareEvent

            event = session.get(CareEvent, by_plugin["rain"].id)
            assert event is not None
            event.expires_at = parse_instant("2026-05-12T06:00:00+08:00")
        released = release_deferred(runtime, parse_instant("2026-05-12T09:00:00+08:00"))
        assert released == []
        rain = next(e for e in events(runtime) if e.plugin == "rain")
        assert rain.status == EventStatus.EXPIRED and "expired before" in (rain.status_reason or "")
        assert fake_twilio.messages == []
    finally:
        runtime.close()
