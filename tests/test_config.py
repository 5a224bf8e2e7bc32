"""Configuration: careflow.toml or CAREFLOW_CONFIG, CAREFLOW_<SECTION>__<KEY> overrides, clear errors."""

from __future__ import annotations

import os
import re
from pathlib import Path
from textwrap import dedent

import pytest
from click.testing import CliRunner, Result

from careflow.cli import base as cli
from careflow.cli import main
from careflow.config import Settings, config_path, load_settings
from careflow.errors import ConfigError
from careflow.plugin_manager import load_plugins
from careflow.runtime import Runtime

TOKEN = "tok_5e3f0c1d9a8b7c6d5e4f3a2b1c0d9e8f"
TWILIO_WITHOUT_TOKEN = """
[channels.sms]
provider = "twilio"

[twilio]
account_sid = "AC00000000000000000000000000000000"
from_number = "+15550000001"
"""


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CAREFLOW_* variable of the machine running the tests may change the configuration."""
    for name in list(os.environ):
        if name.startswith("CAREFLOW_"):
            monkeypatch.delenv(name)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory; CLI messages are not wrapped at 80 columns."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(cli.out, "soft_wrap", True)
    monkeypatch.setattr(cli.err, "soft_wrap", True)
    return work


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    return load_settings(write(tmp_path / "careflow.toml", text), environ or {})


def config_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    path = write(tmp_path / "careflow.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ or {})
    return str(caught.value)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def assert_clean_failure(result: Result) -> None:
    """Exit status 1 with a message, never a traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "error:" in result.stderr


# --- where the configuration comes from -------------------------------------------------------


def test_defaults_without_a_file(here: Path) -> None:
    assert config_path({}) is None

    settings = load_settings(None, {})

    assert settings.database.url == "sqlite:///careflow.db"
    assert settings.broker.url == "local"
    assert {name: c.provider for name, c in settings.channels.items()} == {"sms": "console"}
    assert settings.default_center == "main"
    assert (settings.centers["main"].timezone, settings.centers["main"].locale) == ("Asia/Shanghai", "zh_CN")
    assert settings.twilio.auth_token is None
    assert settings.twilio.base_url == "https://api.twilio.com"
    assert settings.plugins == {}


def test_careflow_toml_in_the_working_directory_is_read(here: Path) -> None:
    write(here / "careflow.toml", '[centers.main]\nname = "上海浦东店"\n')

    settings = load_settings(None, {})

    assert settings.centers["main"].name == "上海浦东店"


def test_careflow_config_picks_the_file(here: Path, tmp_path: Path) -> None:
    write(here / "careflow.toml", '[centers.main]\nname = "From the working directory"\n')
    site = write(tmp_path / "etc" / "site.toml", '[centers.pudong]\nname = "From CAREFLOW_CONFIG"\n')

    settings = load_settings(None, {"CAREFLOW_CONFIG": str(site)})

    assert list(settings.centers) == ["pudong"]
    assert settings.centers["pudong"].name == "From CAREFLOW_CONFIG"


def test_careflow_config_naming_a_missing_file_is_an_error(here: Path) -> None:
    missing = here / "nowhere" / "careflow.toml"

    with pytest.raises(ConfigError, match="does not exist") as caught:
        load_settings(None, {"CAREFLOW_CONFIG": str(missing)})

    assert str(missing) in str(caught.value)


# --- environment overrides --------------------------------------------------------------------


def test_env_overrides_a_single_key(tmp_path: Path) -> None:
    text = """
    [broker]
    url = "local"
    queue = "from-file"
    worker_threads = 2
    """

    settings = load(tmp_path, text, {"CAREFLOW_BROKER__WORKER_THREADS": "8"})

    assert settings.broker.worker_threads == 8
    assert settings.broker.queue == "from-file"  # the other keys of the section are kept
    assert settings.broker.url == "local"


def test_env_overrides_a_url(tmp_path: Path) -> None:
    settings = load(
        tmp_path, '[broker]\nurl = "local"\n', {"CAREFLOW_BROKER__URL": "redis://127.0.0.1:6379/0"}
    )

    assert settings.broker.url == "redis://127.0.0.1:6379/0"


def test_env_overrides_a_nested_center_key(tmp_path: Path) -> None:
    text = """
    [centers.main]
    name = "Main"
    timezone = "Asia/Shanghai"
    """

    settings = load(tmp_path, text, {"CAREFLOW_CENTERS__MAIN__TIMEZONE": "Europe/London"})

    assert settings.centers["main"].timezone == "Europe/London"
    assert settings.centers["main"].name == "Main"


def test_env_overrides_a_plugin_setting(tmp_path: Path) -> None:
    settings = load(
        tmp_path, "[plugins.birthday]\nenabled = true\n", {"CAREFLOW_PLUGINS__BIRTHDAY__ENABLED": "false"}
    )

    assert load_plugins().plugin_settings(settings)["birthday"].enabled is False


def test_env_text_that_looks_like_a_number_stays_text(tmp_path: Path) -> None:
    """A phone number or an all-digit token set by env var is kept exactly as written."""
    env = {"CAREFLOW_TWILIO__FROM_NUMBER": "+15550000001", "CAREFLOW_TWILIO__AUTH_TOKEN": "1234567890" * 3}

    settings = load(tmp_path, TWILIO_WITHOUT_TOKEN.replace('from_number = "+15550000001"', ""), env)

    assert settings.twilio.from_number == "+15550000001"
    assert settings.twilio.auth_token is not None
    assert settings.twilio.auth_token.get_secret_value() == "1234567890" * 3


def test_an_env_variable_with_a_bad_value_names_the_key(tmp_path: Path) -> None:
    message = config_error(tmp_path, "", {"CAREFLOW_BROKER__URL": "http://127.0.0.1:6379"})

    assert "broker.url" in message


def test_a_misspelt_env_variable_is_an_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, "", {"CAREFLOW_TWILIO__AUTH_TOKN": TOKEN})

    assert "twilio.auth_tokn: unknown key" in message
    assert TOKEN not in message


# --- validation: every problem names its key --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[broker]\nurll = "local"\n', "broker.urll"),
        ('[twilio]\nauth_tokn = "x"\n', "twilio.auth_tokn"),
        ('[database]\nurl = "sqlite:///x.db"\npassword = "x"\n', "database.password"),
        ('[centers.main]\ntimezon = "UTC"\n', "centers.main.timezon"),
        ('[channels.sms]\nprovidr = "twilio"\n', "channels.sms.providr"),
        ('[databse]\nurl = "sqlite:///x.db"\n', "databse"),
    ],
)
def test_unknown_key_is_an_error_naming_it(tmp_path: Path, text: str, key: str) -> None:
    message = config_error(tmp_path, text)

    assert f"{tmp_path / 'careflow.toml'}: {key}: unknown key" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[broker]\nworker_threads = "four"\n', "broker.worker_threads"),
        ("[broker]\nworker_threads = 0\n", "broker.worker_threads"),
        ('[database]\necho = "sometimes"\n', "database.echo"),
        ("[database]\nurl = 5\n", "database.url"),
        ("[delivery]\nmax_attempts = 0\n", "delivery.max_attempts"),
        ('[twilio]\ntimeout_seconds = "soon"\n', "twilio.timeout_seconds"),
        ('[centers]\nmain = "Main"\n', "centers.main"),
        ("[plugins]\nbirthday = true\n", "plugins.birthday"),
    ],
)
def test_wrong_type_is_an_error_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    message = config_error(tmp_path, text)

    assert f"{tmp_path / 'careflow.toml'}: {key}: " in message


@pytest.mark.parametrize(
    "url",
    ["local", "redis://127.0.0.1:6379/0", "rediss://cache:6380/1", "amqp://guest:guest@127.0.0.1:5672/%2F"],
)
def test_supported_broker_urls(tmp_path: Path, url: str) -> None:
    assert load(tmp_path, f'[broker]\nurl = "{url}"\n').broker.url == url


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "redis", "", "kafka://broker:9092"])
def test_bad_broker_url_is_an_error(tmp_path: Path, url: str) -> None:
    message = config_error(tmp_path, f'[broker]\nurl = "{url}"\n')

    assert "broker.url: expected 'local', a redis:// URL or an amqp:// URL" in message


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Asia/Shanghia", "America", "CST+8"])
def test_bad_time_zone_in_a_center_is_an_error(tmp_path: Path, zone: str) -> None:
    message = config_error(tmp_path, f'[centers.x]\nname = "X"\ntimezone = "{zone}"\n')

    assert f"centers.x.timezone: unknown time zone {zone!r}" in message


@pytest.mark.parametrize("code", ["UK", "China", "XX", "1"])
def test_a_center_country_that_is_not_an_iso_code_is_an_error(tmp_path: Path, code: str) -> None:
    message = config_error(tmp_path, f'[centers.x]\nname = "X"\ncountry = "{code}"\n')

    assert f"centers.x.country: {code!r} is not an ISO 3166 country code" in message
    if code == "UK":
        assert "the United Kingdom is 'GB'" in message


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ('country = "gb"\ntimezone = "Asia/Shanghai"', "GB"),  # configured wins, in capitals
        ('timezone = "Europe/London"\nlocale = "en"', "GB"),  # else the time zone's
        ('timezone = "Asia/Hong_Kong"\nlocale = "zh_CN"', "HK"),
        ('timezone = "UTC"\nlocale = "en_AU"', "AU"),  # a zone of no country: the locale's
        ('timezone = "UTC"\nlocale = "en"', "US"),  # a bare language: its likely territory
    ],
)
def test_a_centers_country_is_configured_else_its_time_zones_else_its_locales(
    tmp_path: Path, section: str, expected: str
) -> None:
    settings = load(tmp_path, f'[centers.x]\nname = "X"\n{section}\n')

    assert settings.centers["x"].country_in_effect == expected


def test_the_center_row_gets_the_country_in_effect_and_follows_the_config(tmp_path: Path) -> None:
    from sqlalchemy import select

    from careflow.storage.models import Center

    url = f"sqlite:///{tmp_path / 'c.db'}"
    text = (
        f'[database]\nurl = "{url}"\n[centers.ldn]\nname = "L"\ntimezone = "Europe/London"\nlocale = "en"\n'
    )
    for config, expected in ((text, "GB"), (text + 'country = "IE"\n', "IE")):
        runtime = Runtime.build(load(tmp_path, config), migrate_schema=True)
        try:
            with runtime.sessions() as session:
                assert session.scalars(select(Center.country)).one() == expected
        finally:
            runtime.close()


def test_twilio_without_auth_token_names_the_key_and_the_env_variable(tmp_path: Path) -> None:
    message = config_error(tmp_path, TWILIO_WITHOUT_TOKEN)

    assert "twilio.auth_token is required" in message
    assert "CAREFLOW_TWILIO__AUTH_TOKEN" in message


def test_an_empty_auth_token_counts_as_missing(tmp_path: Path) -> None:
    message = config_error(tmp_path, TWILIO_WITHOUT_TOKEN, {"CAREFLOW_TWILIO__AUTH_TOKEN": ""})

    assert "twilio.auth_token is required" in message


def test_twilio_without_account_sid_names_the_key(tmp_path: Path) -> None:
    text = TWILIO_WITHOUT_TOKEN.replace('account_sid = "AC00000000000000000000000000000000"', "")

    message = config_error(tmp_path, text, {"CAREFLOW_TWILIO__AUTH_TOKEN": TOKEN})

    assert "twilio.account_sid is required" in message
    assert "CAREFLOW_TWILIO__ACCOUNT_SID" in message


def test_twilio_needs_a_sender(tmp_path: Path) -> None:
    text = TWILIO_WITHOUT_TOKEN.replace('from_number = "+15550000001"', "")

    message = config_error(tmp_path, text, {"CAREFLOW_TWILIO__AUTH_TOKEN": TOKEN})

    assert "centers.main: no SMS sender" in message
    assert "twilio.from_number / twilio.messaging_service_sid" in message


def test_a_messaging_service_is_a_sender_too(tmp_path: Path) -> None:
    text = TWILIO_WITHOUT_TOKEN.replace('from_number = "+15550000001"', 'messaging_service_sid = "MG123"')

    settings = load(tmp_path, text, {"CAREFLOW_TWILIO__AUTH_TOKEN": TOKEN})

    assert settings.twilio.messaging_service_sid == "MG123"


def test_the_secret_given_only_by_env_variable_passes(tmp_path: Path) -> None:
    settings = load(tmp_path, TWILIO_WITHOUT_TOKEN, {"CAREFLOW_TWILIO__AUTH_TOKEN": TOKEN})

    assert settings.channels["sms"].provider == "twilio"
    assert settings.twilio.auth_token is not None
    assert settings.twilio.auth_token.get_secret_value() == TOKEN


def test_the_auth_token_never_appears_when_settings_are_shown(tmp_path: Path) -> None:
    settings = load(tmp_path, TWILIO_WITHOUT_TOKEN, {"CAREFLOW_TWILIO__AUTH_TOKEN": TOKEN})

    for shown in (repr(settings), str(settings), repr(settings.twilio), str(settings.twilio)):
        assert TOKEN not in shown
    assert TOKEN not in settings.model_dump_json()
    assert "auth_token" in repr(settings)  # hidden, not left out


def test_the_auth_token_is_not_in_errors_about_other_keys(tmp_path: Path) -> None:
    text = TWILIO_WITHOUT_TOKEN + f'auth_token = "{TOKEN}"\n\n[broker]\nurl = "http://wrong"\n'

    message = config_error(tmp_path, text)

    assert "broker.url" in message
    assert TOKEN not in message


# --- plugin sections --------------------------------------------------------------------------


def test_unknown_plugin_section_names_the_plugin(tmp_path: Path) -> None:
    settings = load(tmp_path, "[plugins.nosuch]\nenabled = true\n")

    with pytest.raises(ConfigError) as caught:
        load_plugins().plugin_settings(settings)

    assert "[plugins.nosuch]: no such care plugin is installed (installed: birthday" in str(caught.value)


def test_runtime_build_refuses_an_unknown_plugin_section(tmp_path: Path) -> None:
    text = f'[database]\nurl = "sqlite:///{tmp_path / "careflow.db"}"\n\n[plugins.nosuch]\nenabled = true\n'
    settings = load(tmp_path, text)

    with pytest.raises(ConfigError, match=re.escape("[plugins.nosuch]: no such care plugin")):
        Runtime.build(settings, migrate_schema=True)


def test_misspelt_plugin_key_names_the_key(tmp_path: Path) -> None:
    settings = load(tmp_path, "[plugins.birthday]\nenabledd = true\n")

    with pytest.raises(ConfigError) as caught:
        load_plugins().plugin_settings(settings)

    assert "[plugins.birthday]: enabledd: unknown key" in str(caught.value)


def test_plugin_setting_of_the_wrong_type_names_the_key(tmp_path: Path) -> None:
    settings = load(tmp_path, '[plugins.birthday]\nenabled = "perhaps"\n')

    with pytest.raises(ConfigError, match=re.escape("[plugins.birthday]: enabled: ")):
        load_plugins().plugin_settings(settings)


def test_plugins_are_disabled_unless_enabled(tmp_path: Path) -> None:
    registry = load_plugins()

    assert registry.plugin_settings(load(tmp_path, ""))["birthday"].enabled is False
    enabled = registry.plugin_settings(load(tmp_path, "[plugins.birthday]\nenabled = true\n"))
    assert enabled["birthday"].enabled is True


# --- paths and file problems ------------------------------------------------------------------


def test_relative_sqlite_path_is_relative_to_the_config_file(here: Path, tmp_path: Path) -> None:
    config = write(tmp_path / "site" / "careflow.toml", '[database]\nurl = "sqlite:///data/careflow.db"\n')
    (tmp_path / "site" / "data").mkdir()

    settings = load_settings(config, {})
    assert settings.database.url == f"sqlite:///{(tmp_path / 'site' / 'data' / 'careflow.db').resolve()}"
    Runtime.build(settings, migrate_schema=True).close()

    assert (tmp_path / "site" / "data" / "careflow.db").exists()
    assert not (here / "data").exists()


def test_absolute_and_in_memory_sqlite_urls_are_kept(tmp_path: Path) -> None:
    absolute = f"sqlite:///{tmp_path / 'abs.db'}"

    assert load(tmp_path, f'[database]\nurl = "{absolute}"\n').database.url == absolute
    assert load(tmp_path, '[database]\nurl = "sqlite:///:memory:"\n').database.url == "sqlite:///:memory:"


def test_relative_template_dir_is_relative_to_the_config_file(here: Path, tmp_path: Path) -> None:
    config = write(tmp_path / "site" / "careflow.toml", '[templates]\ndir = "my-templates"\n')

    settings = load_settings(config, {})

    assert settings.templates.dir == (tmp_path / "site" / "my-templates").resolve()


def test_invalid_toml_is_a_clear_error_with_the_path(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[broker]\nurl = "local\n')

    assert message.startswith(f"{tmp_path / 'careflow.toml'}: not valid TOML")
    assert "line 2" in message


def test_a_config_file_not_in_utf8_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "careflow.toml"
    path.write_bytes('[centers.main]\nname = "上海浦东店"\n'.encode("gbk"))

    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})

    assert str(caught.value) == f"{path}: not UTF-8 text; TOML files must be saved as UTF-8"


# --- through the CLI --------------------------------------------------------------------------


def test_the_file_careflow_init_writes_is_valid(here: Path) -> None:
    result = invoke("init", "--center-name", "浦东店", "--timezone", "Asia/Shanghai")
    assert result.exit_code == 0, result.output

    settings = load_settings()

    assert settings.centers["main"].name == "浦东店"
    assert settings.database.url == f"sqlite:///{(here / 'careflow.db').resolve()}"
    assert load_plugins().plugin_settings(settings)["birthday"].enabled is True
    assert invoke("plugins").exit_code == 0


@pytest.mark.parametrize(
    ("args", "line", "note"),
    [
        (
            ["--timezone", "Europe/London", "--locale", "en"],
            'country = "GB"',
            "from the time zone Europe/London",
        ),
        (["--timezone", "Asia/Shanghai", "--country", "hk"], 'country = "HK"', None),
    ],
)
def test_init_writes_the_centers_country_derived_from_the_time_zone(
    here: Path, args: list[str], line: str, note: str | None
) -> None:
    result = invoke("init", *args)
    assert result.exit_code == 0, result.output

    written = (here / "careflow.toml").read_text(encoding="utf-8").splitlines()
    assert any(text.startswith(line + " ") for text in written)
    assert load_settings().centers["main"].country == line[-3:-1]
    if note:
        assert note in result.stdout


def test_init_refuses_a_country_that_is_not_an_iso_code(here: Path) -> None:
    result = invoke("init", "--country", "UK")

    assert result.exit_code == 2
    assert "'UK' is not an ISO 3166 country code (the United Kingdom is 'GB')" in result.output
    assert not (here / "careflow.toml").exists()


def test_cli_prints_a_config_error_and_exits_1(here: Path) -> None:
    write(here / "careflow.toml", '[broker]\nurll = "local"\n')

    result = invoke("run")

    assert_clean_failure(result)
    assert "broker.urll: unknown key" in result.stderr


def test_cli_reads_the_file_named_by_careflow_config(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert invoke("init").exit_code == 0
    broken = write(here / "other" / "site.toml", '[twilio]\naccount_sid = "AC1"\nauth_token = \n')
    monkeypatch.setenv("CAREFLOW_CONFIG", str(broken))

    result = invoke("run")

    assert_clean_failure(result)
    assert f"{broken}: not valid TOML" in result.stderr


def test_cli_env_override_of_the_database(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert invoke("init").exit_code == 0
    monkeypatch.setenv("CAREFLOW_DATABASE__URL", f"sqlite:///{here / 'elsewhere.db'}")

    result = invoke("run")

    assert_clean_failure(result)
    assert "elsewhere.db is not initialised: run 'careflow init'" in result.stderr


def test_cli_run_with_an_uninitialised_database_says_to_run_init(here: Path) -> None:
    write(here / "careflow.toml", '[database]\nurl = "sqlite:///fresh.db"\n')

    result = invoke("run")

    assert_clean_failure(result)
    assert "is not initialised: run 'careflow init'" in result.stderr
    assert "fresh.db" in result.stderr


def test_cli_twilio_without_token_fails_and_env_token_fixes_it(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(here / "careflow.toml", TWILIO_WITHOUT_TOKEN)

    result = invoke("plugins")

    assert_clean_failure(result)
    assert "twilio.auth_token is required" in result.stderr
    assert "CAREFLOW_TWILIO__AUTH_TOKEN" in result.stderr

    monkeypatch.setenv("CAREFLOW_TWILIO__AUTH_TOKEN", TOKEN)
    result = invoke("plugins")

    assert result.exit_code == 0, result.output
    assert re.search(r"twilio\s*│\s*sms, whatsapp\s*│\s*sms", result.stdout)
    assert TOKEN not in result.output


def test_cli_unknown_plugin_section_is_an_error(here: Path) -> None:
    write(here / "careflow.toml", "[plugins.nosuch]\nenabled = true\n")

    result = invoke("plugins")

    assert_clean_failure(result)
    assert "error: [plugins.nosuch]: no such care plugin is installed (installed: birthday" in result.stderr


def test_cli_misspelt_plugin_key_is_an_error(here: Path) -> None:
    write(here / "careflow.toml", "[plugins.birthday]\nenabledd = true\n")

    result = invoke("plugins")

    assert_clean_failure(result)
    assert "enabledd: unknown key" in result.stderr


def test_cli_unknown_sms_provider_is_an_error(here: Path) -> None:
    write(here / "careflow.toml", '[channels.sms]\nprovider = "pigeon"\n')

    result = invoke("run")

    assert_clean_failure(result)
    assert "channels.sms.provider: unknown provider 'pigeon'" in result.stderr
