"""Per-center senders and channel settings are validated at start-up, with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from careflow.config import load_settings
from careflow.errors import ConfigError

TWILIO = """
[twilio]
account_sid = "AC00000000000000000000000000000000"
auth_token = "token"
"""


def load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "careflow.toml"
    path.write_text(text, encoding="utf-8")
    load_settings(path, environ={})


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[centers.north]\nsms_from = "13800138000"\n',
            "centers.north.sms_from: '13800138000' is not an E.164 number",
        ),
        (
            '[centers.north]\nwhatsapp_from = "+1 555"\n',
            "centers.north.whatsapp_from: '+1 555' is not an E.164 number",
        ),
        (
            '[centers.north]\nemail_from = "care at anxin"\n',
            "centers.north.email_from: 'care at anxin' is not a valid e-mail address",
        ),
        (
            '[centers.north]\nmessaging_service_sid = "XX12"\n',
            "centers.north.messaging_service_sid: expected a Twilio messaging service SID",
        ),
        (
            '[centers.north]\nchannel_order = ["sms", "sms"]\n',
            "centers.north.channel_order: list each channel at most once",
        ),
        (
            '[email]\nsecurity = "ssl"\n',
            "email.security: Input should be 'starttls', 'tls' or 'none'",
        ),
        (
            '[channels.sms]\nprovider = "twilio"\n' + TWILIO + "[centers.north]\n[centers.south]\n"
            'sms_from = "+8613000000001"\n',
            "centers.north: no SMS sender: set centers.north.sms_from",
        ),
        (
            '[channels.whatsapp]\nprovider = "twilio"\n'
            + TWILIO
            + '[centers.north]\nsms_from = "+8613000000001"\n',
            "centers.north: no WhatsApp sender",
        ),
        (
            '[channels.email]\nprovider = "smtp"\n[web]\nsecret_key = "k"\n[centers.north]\n',
            "centers.north: no e-mail sender: set centers.north.email_from, or email.from_address",
        ),
        (
            '[channels.email]\nprovider = "smtp"\n[email]\nfrom_address = "care@anxin.example"\n'
            "[centers.north]\n",
            "web.secret_key is required because channel 'email' sends real e-mail",
        ),
        (
            '[channels.email]\nprovider = "smtp"\n[email]\nfrom_address = "care@anxin.example"\n'
            '[web]\nsecret_key = "k"\n[centers.north]\n',
            "web.public_url is required because channel 'email' sends real e-mail",
        ),
    ],
)
def test_bad_channel_settings_are_named(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, toml)
    assert message in str(caught.value)


def test_each_center_may_have_its_own_senders_or_use_the_global_ones(tmp_path: Path) -> None:
    path = tmp_path / "careflow.toml"
    path.write_text(
        '[channels.sms]\nprovider = "twilio"\n[channels.whatsapp]\nprovider = "twilio"\n'
        '[channels.email]\nprovider = "smtp"\n' + TWILIO + 'from_number = "+15005550006"\n'
        '[email]\nfrom_address = "care@group.example"\n'
        '[centers.north]\nsms_from = "+86 130 0000 0001"\nemail_from = "North@Anxin.Example"\n'
        'address = "1 North Road"\n[centers.south]\n',
        encoding="utf-8",
    )
    env = {
        "CAREFLOW_WEB__SECRET_KEY": "from-the-environment",
        "CAREFLOW_WEB__PUBLIC_URL": "https://c.example",
    }
    settings = load_settings(path, environ=env)
    north = settings.centers["north"]
    assert north.sms_from == "+8613000000001"  # normalised to E.164
    assert north.email_from == "North@anxin.example"  # the domain normalised, the local part kept
    assert north.channel_order == ["sms", "whatsapp", "email"]
    assert settings.web.secret_key is not None
    assert settings.web.secret_key.get_secret_value() == "from-the-environment"
