"""Small policy pieces: keywords, masking, the sending window, carrier opt-outs and backlog warnings."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from careflow.config import CenterSettings, load_settings
from careflow.delivery.rate_limit import backlog_warning
from careflow.errors import ConfigError
from careflow.planning.plan import plan
from careflow.policies.consent import Keyword, keyword_of, mask_phone
from careflow.policies.quiet_hours import SendWindow
from careflow.service.care_run import run_day
from careflow.storage.models import EventStatus
from careflow.testing import add_customer, make_settings, parse_instant
from careflow.testing.twilio_server import FakeTwilio, Fault
from tests.policy_support import consents, events, twilio_runtime

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("STOP", Keyword.STOP),
        ("  unsubscribe ", Keyword.STOP),
        ("ＳＴＯＰ", Keyword.STOP),  # full-width, as Chinese keyboards type it
        ("退订", Keyword.STOP),
        ("退订。", Keyword.STOP),
        ("Td", Keyword.STOP),
        ("unstop", Keyword.START),
        ("Yes", Keyword.START),
        ("HELP", Keyword.HELP),
        ("please stop calling me on sundays", None),
        ("T恤尺码", None),
        ("", None),
    ],
)
def test_keywords_are_whole_messages(text: str, expected: Keyword | None) -> None:
    assert keyword_of(text) is expected


def test_phone_numbers_are_masked() -> None:
    assert mask_phone("+8613800138000") == "+86*********00"
    assert mask_phone("whatsapp:+15005550006") == "whatsapp:+15*******06"
    assert mask_phone(None) == "-"


def test_the_sending_window_in_local_time() -> None:
    window = SendWindow.of(CenterSettings())
    at = datetime(2026, 5, 11, 12, 30, tzinfo=UTC)  # 20:30 in Shanghai
    assert window.next_opening(at, SHANGHAI) == datetime(2026, 5, 12, 1, 0, tzinfo=UTC)
    assert window.next_opening(datetime(2026, 5, 11, 0, 59, tzinfo=UTC), SHANGHAI) == datetime(
        2026, 5, 11, 1, 0, tzinfo=UTC
    )  # 08:59 -> 09:00 the same day
    assert window.next_opening(datetime(2026, 5, 11, 1, 0, tzinfo=UTC), SHANGHAI) is None
    night = SendWindow.of(CenterSettings(send_from="22:00", send_until="06:00"))
    assert night.next_opening(datetime(2026, 5, 11, 15, 0, tzinfo=UTC), SHANGHAI) is None  # 23:00
    assert str(night) == "22:00-06:00"


def test_bad_window_settings_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected HH:MM"):
        CenterSettings(send_from="9am")
    with pytest.raises(ValueError, match="window would be empty"):
        CenterSettings(send_from="09:00", send_until="09:00")
    path = tmp_path / "careflow.toml"
    path.write_text('[centers.main]\nstop_withdraws = "service"\n', "utf-8")
    with pytest.raises(ConfigError, match=r"centers\.main\.stop_withdraws"):
        load_settings(path, environ={})
    assert make_settings("sqlite://").centers["main"].frequency_cap == 2


def test_error_21610_on_send_records_the_opt_out(tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    runtime = twilio_runtime(f"sqlite:///{tmp_path / 'c.db'}", fake_twilio)
    try:
        with runtime.sessions.begin() as session:
            customer = add_customer(
                session, external_id="A", phone="+8613800000001", birthday=(1990, 5, 11), locale="zh_CN"
            )
        fake_twilio.fail_recipient("+8613800000001", Fault(status=400, code=21610))
        run_day(runtime, now=parse_instant("2026-05-11T10:00:00+08:00"))
        (event,) = events(runtime)
        assert event.status == EventStatus.FAILED and event.error_code == "21610"
        assert consents(runtime, customer.id)[("sms", "service")] is False
        assert consents(runtime, customer.id)[("sms", "marketing")] is False
        assert fake_twilio.requests == 1  # not retried
    finally:
        runtime.close()


def test_a_backlog_longer_than_the_provider_queue_validity_warns(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    runtime = twilio_runtime(f"sqlite:///{tmp_path / 'c.db'}", fake_twilio)
    runtime.settings.twilio.messages_per_second = 0.0001  # 10 000 s per message: 5 messages > 10 h
    try:
        with runtime.sessions.begin() as session:
            for i in range(5):
                add_customer(session, external_id=f"C{i}", phone=f"+861380000000{i}", birthday=(1990, 5, 11))
        assert backlog_warning(runtime) is None
        plan(runtime, now=parse_instant("2026-05-11T10:00:00+08:00"))
        warning = backlog_warning(runtime)
        assert warning is not None
        assert "5 message(s) wait for sender +15005550006" in warning and "10-hour" in warning
    finally:
        runtime.close()
