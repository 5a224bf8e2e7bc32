"""One validated settings object, read from ``careflow.toml`` and ``CAREFLOW_*`` variables.

Lookup order: the file named by ``CAREFLOW_CONFIG``, else ``careflow.toml`` in the
working directory, else built-in defaults.  Single keys are overridden by environment
variables named ``CAREFLOW_<SECTION>__<KEY>`` (``CAREFLOW_TWILIO__AUTH_TOKEN``,
``CAREFLOW_DATABASE__URL``, ``CAREFLOW_CENTERS__MAIN__TIMEZONE``): secrets belong there.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from careflow.countries import center_country, check_country
from careflow.errors import ConfigError

ENV_PREFIX = "CAREFLOW_"
CONFIG_ENV = "CAREFLOW_CONFIG"
DEFAULT_FILE = "careflow.toml"


class _Section(BaseModel):
    """A config section: unknown keys are errors, so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a tzdata directory: OSError
        raise ValueError(
            f"unknown time zone {value!r}; expected an IANA name such as 'Asia/Shanghai'"
        ) from None
    return value


class DatabaseSettings(_Section):
    url: str = "sqlite:///careflow.db"
    echo: bool = False


class BrokerSettings(_Section):
    url: str = "local"
    queue: str = "careflow"
    worker_threads: int = Field(default=4, ge=1, le=256)
    # Redis only: a worker silent this long is presumed dead and its unacknowledged messages
    # are redelivered (the outbox claim makes a redelivery of a message still in hand a no-op).
    heartbeat_timeout_ms: int = Field(default=60_000, ge=500)
    # Redis only: chance in 1,000,000 that a broker call also requeues dead workers' messages.
    maintenance_chance: int = Field(default=1_000, ge=0, le=1_000_000)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value == "local" or value.startswith(("redis://", "rediss://", "amqp://", "amqps://")):
            return value
        raise ValueError("expected 'local', a redis:// URL or an amqp:// URL")


class ChannelSettings(_Section):
    provider: str = "console"
    # Switched off (e.g. while a provider is down): events fall back to the next channel.
    enabled: bool = True


class TwilioSettings(_Section):
    account_sid: str | None = None
    auth_token: SecretStr | None = None
    from_number: str | None = None
    messaging_service_sid: str | None = None
    base_url: str = "https://api.twilio.com"
    timeout_seconds: float = Field(default=10.0, gt=0)
    # Where Twilio posts delivery status callbacks: <[web] public_url>/webhooks/twilio/status.
    status_callback_url: str | None = None
    # Per sender (from_number or messaging service), across every worker and host; 0: no limit.
    # A long code sends 1 segment per second; toll-free and short codes more.
    messages_per_second: float = Field(default=1.0, ge=0)
    # The WhatsApp sender when a center names none; falls back to from_number.
    whatsapp_from: str | None = None

    @field_validator("from_number", "whatsapp_from")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        return check_e164(value)


class EmailSettings(_Section):
    host: str = "localhost"
    port: int = Field(default=587, ge=1, le=65535)
    # starttls: plain connection upgraded with STARTTLS (port 587); tls: implicit TLS (port 465).
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    from_address: str | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    # A CA bundle to trust instead of the system's (a private relay's own certificate).
    ca_file: Path | None = None

    @field_validator("from_address")
    @classmethod
    def _valid_from(cls, value: str | None) -> str | None:
        return check_email(value)


class WebSettings(_Section):
    # Signs console session cookies and unsubscribe links (HMAC, each with its own label);
    # set it from CAREFLOW_WEB__SECRET_KEY, never in the repository.
    secret_key: SecretStr | None = None
    cookie_secure: bool = True  # send the session cookie over HTTPS only (turn off for plain-HTTP dev)
    session_idle_minutes: int = Field(default=60, ge=1, le=24 * 60)
    session_max_hours: int = Field(default=12, ge=1, le=24 * 30)
    # Where customers (and Twilio) reach `careflow serve`, e.g. https://care.example.com;
    # links in e-mails start with it.
    public_url: str | None = None
    # Where `careflow serve` listens.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)


CHANNEL_NAMES = ("sms", "whatsapp", "email")


class CenterSettings(_Section):
    name: str = "Service Center"
    timezone: str = "Asia/Shanghai"
    locale: str = "zh_CN"
    # ISO 3166 alpha-2 (CN, GB): phone numbers written without + are read in this country.
    # Unset: the time zone's country (Europe/London: GB), else the locale's (careflow.countries).
    country: str | None = None
    help_text: str = "Reply STOP to opt out."
    # Postal address printed in every e-mail footer.
    address: str | None = None
    # This center's own senders; unset ones fall back to [twilio] / [email].
    sms_from: str | None = None
    messaging_service_sid: str | None = None
    whatsapp_from: str | None = None
    email_from: str | None = None
    # The order events fall back through when the preferred channel cannot reach a customer.
    channel_order: list[str] = Field(default_factory=lambda: list(CHANNEL_NAMES))
    # What an inbound STOP withdraws: consent for every purpose, or only for marketing.
    stop_withdraws: Literal["all", "marketing"] = "all"
    # Quiet hours: care messages go out only between these local times (customer's time zone).
    send_from: str = "09:00"
    send_until: str = "20:00"
    # Frequency cap: at most this many care messages per customer in a rolling window (0: no cap).
    frequency_cap: int = Field(default=2, ge=0)
    frequency_window_days: int = Field(default=7, ge=1, le=366)
    plan_at: str = "08:00"  # local time at which `careflow scheduler` plans this center's day
    # Merge a customer's occasions due on one day and channel into one message (careflow.policies.bundling).
    bundling: bool = False

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return _check_timezone(value)

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        return check_country(value) if value is not None else None

    @property
    def country_in_effect(self) -> str | None:
        """The configured country, else the time zone's, else the locale's."""
        return center_country(self.country, self.timezone, self.locale)

    @field_validator("sms_from", "whatsapp_from")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        return check_e164(value)

    @field_validator("email_from")
    @classmethod
    def _valid_from(cls, value: str | None) -> str | None:
        return check_email(value)

    @field_validator("messaging_service_sid")
    @classmethod
    def _service_sid(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("MG") and len(value) == 34):
            raise ValueError("expected a Twilio messaging service SID: 'MG' and 32 hex digits")
        return value

    @field_validator("channel_order")
    @classmethod
    def _known_channels(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name.isidentifier() or name != name.lower():
                raise ValueError(f"{name!r} is not a channel name; expected e.g. {', '.join(CHANNEL_NAMES)}")
        if len(set(value)) != len(value) or not value:
            raise ValueError("list each channel at most once, and at least one")
        return value

    @field_validator("send_from", "send_until")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        hours, sep, minutes = value.partition(":")
        if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
            raise ValueError(f"{value!r} is not a local time; expected HH:MM, e.g. '09:00'")
        if not (0 <= int(hours) <= 24 and 0 <= int(minutes) < 60) or (int(hours) == 24 and int(minutes)):
            raise ValueError(f"{value!r} is not a time of day between 00:00 and 24:00")
        return value

    @model_validator(mode="after")
    def _window_not_empty(self) -> CenterSettings:
        if self.send_from == self.send_until:
            raise ValueError("send_from and send_until are equal: the sending window would be empty")
        return self

    @field_validator("plan_at")
    @classmethod
    def _plan_time(cls, value: str) -> str:
        return local_time_of_day(value)


def local_time_of_day(value: str) -> str:
    """A local time of day as HH:MM (the scheduler's daily jobs), normalised: '8:5' -> '08:05'."""
    hours, sep, minutes = value.partition(":")
    if sep and hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60:
        return f"{int(hours):02d}:{int(minutes):02d}"
    raise ValueError(f"expected a local time as HH:MM, e.g. '08:00', got {value!r}")


class TemplateSettings(_Section):
    # A directory that overrides shipped templates: <dir>/<plugin>/<channel>.<locale>.j2,
    # and <dir>/centers/<center>/<plugin>/... for one center.
    dir: Path | None = None
    # Lint fails an SMS template whose rendered sample needs more segments than this (footer included).
    sms_segment_budget: int = Field(default=3, ge=1, le=10)


class DeliverySettings(_Section):
    max_attempts: int = Field(default=5, ge=1, le=50)
    min_backoff_ms: int = Field(default=1_000, ge=0)
    max_backoff_ms: int = Field(default=300_000, ge=0)
    time_limit_ms: int = Field(default=60_000, ge=1_000)
    # Events per queue message. A batch shares its database round trips (one claim, one
    # preparation, one recording transaction), which is what lets a worker keep up with the
    # provider; 1 sends one message per event. Either way each event keeps its own claim,
    # attempt count and outcome.
    batch_size: int = Field(default=50, ge=1, le=1_000)


class SchedulerSettings(_Section):
    batch_size: int = Field(default=2_000, ge=1, le=100_000)
    # `careflow scheduler`: how often it wakes, how long its database lease lasts (a standby
    # takes over at most this long after the leader dies), and after how long a planned event
    # nobody touched is presumed to have lost its broker message and is queued again.
    tick_seconds: float = Field(default=30.0, gt=0)
    lease_seconds: float = Field(default=90.0, gt=0)
    requeue_after_seconds: float = Field(default=900.0, gt=0)
    # How long one care plugin may take over one batch before it is abandoned for the run.
    plugin_time_budget_seconds: float = Field(default=120.0, gt=0, le=3_600)
    # Customer ids per planning shard when a run on a remote broker is split across workers.
    shard_size: int = Field(default=100_000, ge=1)


def check_e164(value: str | None) -> str | None:
    """A sender number must be E.164 (+ country code, digits), checked with phonenumbers."""
    if value is None:
        return None
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        number = None
    if not value.startswith("+") or number is None or not phonenumbers.is_possible_number(number):
        raise ValueError(f"{value!r} is not an E.164 number; write it as +<country code><number>")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def check_email(value: str | None) -> str | None:
    """A sender address must be a valid e-mail address (no DNS lookup at start-up)."""
    if value is None:
        return None
    try:
        return str(validate_email(value, check_deliverability=False).normalized)
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a valid e-mail address ({exc})") from None


class SegmentSettings(_Section):
    """How the nightly segmentation classifies customers (see docs/care-plugins.md#segments)."""

    # "thresholds": A needs both a_min_visits and a_min_spend, B either b_min_*; "percentiles":
    # A is the top a_top_percent by 12-month spend, B the next up to b_top_percent.
    method: Literal["thresholds", "percentiles"] = "thresholds"
    a_min_visits: int = Field(default=4, ge=1)
    a_min_spend: float = Field(default=5_000, ge=0)
    b_min_visits: int = Field(default=2, ge=1)
    b_min_spend: float = Field(default=1_500, ge=0)
    a_top_percent: float = Field(default=20, gt=0, le=100)
    b_top_percent: float = Field(default=50, gt=0, le=100)
    lapsed_after_months: int = Field(default=9, ge=1, le=120)
    batch_size: int = Field(default=20_000, ge=1)
    # Local time at which `careflow scheduler` computes each center's segments for the day,
    # before its plan_at, so the day's planning does not wait for them.
    refresh_at: str = "03:00"

    @field_validator("refresh_at")
    @classmethod
    def _refresh_time(cls, value: str) -> str:
        return local_time_of_day(value)

    @model_validator(mode="after")
    def _ordered(self) -> SegmentSettings:
        if self.b_top_percent < self.a_top_percent:
            raise ValueError("b_top_percent must be at least a_top_percent (B includes everyone above it)")
        return self


def _secret_text(value: SecretStr | str | None) -> str:
    """The text of a possibly secret value ("" for None): an empty SecretStr is missing too."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value or ""


class Settings(_Section):
    database: DatabaseSettings = DatabaseSettings()
    broker: BrokerSettings = BrokerSettings()
    channels: dict[str, ChannelSettings] = Field(default_factory=lambda: {"sms": ChannelSettings()})
    twilio: TwilioSettings = TwilioSettings()
    email: EmailSettings = EmailSettings()
    web: WebSettings = WebSettings()
    centers: dict[str, CenterSettings] = Field(default_factory=lambda: {"main": CenterSettings()})
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)
    templates: TemplateSettings = TemplateSettings()
    delivery: DeliverySettings = DeliverySettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    segments: SegmentSettings = SegmentSettings()

    @model_validator(mode="after")
    def _twilio_complete(self) -> Settings:
        uses_twilio = any(c.provider == "twilio" for c in self.channels.values())
        if uses_twilio:
            missing = [k for k in ("account_sid", "auth_token") if not _secret_text(getattr(self.twilio, k))]
            for key in missing:
                raise ValueError(
                    f"twilio.{key} is required because a channel uses provider 'twilio'; "
                    f"set it in careflow.toml or {ENV_PREFIX}TWILIO__{key.upper()}"
                )
        if not self.centers:
            raise ValueError("at least one [centers.<code>] section is required")
        check_senders(self)
        return self

    @property
    def default_center(self) -> str:
        """The center used when a command is not told which one: the first configured."""
        return next(iter(self.centers))


def check_senders(settings: Settings) -> None:
    """Every center must have a sender on every channel a real provider sends on."""
    tw, mail = settings.twilio, settings.email

    def provider(channel: str) -> str | None:
        chosen = settings.channels.get(channel)
        return chosen.provider if chosen is not None else None

    for code, center in settings.centers.items():
        where = f"centers.{code}"
        if provider("sms") == "twilio" and not (
            center.messaging_service_sid or center.sms_from or tw.messaging_service_sid or tw.from_number
        ):
            raise ValueError(
                f"{where}: no SMS sender: set {where}.sms_from or {where}.messaging_service_sid, "
                "or twilio.from_number / twilio.messaging_service_sid for every center"
            )
        if provider("whatsapp") == "twilio" and not (
            center.whatsapp_from or tw.whatsapp_from or tw.from_number
        ):
            raise ValueError(
                f"{where}: no WhatsApp sender: set {where}.whatsapp_from, or twilio.whatsapp_from "
                "for every center"
            )
        if provider("email") == "smtp" and not (center.email_from or mail.from_address):
            raise ValueError(
                f"{where}: no e-mail sender: set {where}.email_from, or email.from_address for every center"
            )
    if provider("email") == "smtp" and not _secret_text(settings.web.secret_key):
        raise ValueError(
            "web.secret_key is required because channel 'email' sends real e-mail: it signs the "
            f"one-click unsubscribe links; set {ENV_PREFIX}WEB__SECRET_KEY to a long random string"
        )
    if provider("email") == "smtp" and not settings.web.public_url:
        raise ValueError(
            "web.public_url is required because channel 'email' sends real e-mail: unsubscribe "
            "links point to it (the address where customers reach 'careflow serve')"
        )


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Turn ``CAREFLOW_A__B__C=v`` into ``{"a": {"b": {"c": v}}}``, parsing values as TOML."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV or "__" not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_env_value(raw)
    return tree


def _parse_env_value(raw: str) -> Any:
    """TOML booleans, arrays, tables and quoted strings are parsed; anything else stays text.

    Numbers and dates stay text as well: ``+15550000001`` or an all-digit token must not
    become an integer (a string key would then reject it); numeric keys convert text themselves.
    """
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    return value if isinstance(value, bool | str | list | dict) else raw


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file in effect, or None when running on built-in defaults."""
    env = os.environ if environ is None else environ
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    candidate = Path.cwd() / DEFAULT_FILE
    return candidate if candidate.exists() else None


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, merge and validate the configuration; every problem names its key."""
    env = os.environ if environ is None else environ
    path = path or config_path(env)
    data: dict[str, Any] = {}
    where = "built-in defaults"
    if path is not None:
        where = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist (named by {CONFIG_ENV}?)") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text; TOML files must be saved as UTF-8") from None
    data = _merge(data, _env_overrides(env))
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None
    if path is not None:
        settings = _resolve_relative(settings, path.parent)
    return settings


def _resolve_relative(settings: Settings, base: Path) -> Settings:
    """Relative SQLite paths and template dirs are relative to the config file, not the cwd."""
    url = settings.database.url
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        settings.database.url = prefix + str((base / url[len(prefix) :]).resolve())
    if settings.templates.dir is not None and not settings.templates.dir.is_absolute():
        settings.templates.dir = (base / settings.templates.dir).resolve()
    return settings


def format_validation_error(exc: ValidationError, where: str) -> str:
    """One line per problem: ``where: section.key: what is wrong``."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see careflow.toml written by 'careflow init')"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        lines.append(f"{where}: {key}: {msg}")
    return "\n".join(lines)
