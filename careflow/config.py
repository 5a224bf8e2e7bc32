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
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

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

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value == "local" or value.startswith(("redis://", "rediss://", "amqp://", "amqps://")):
            return value
        raise ValueError("expected 'local', a redis:// URL or an amqp:// URL")


class ChannelSettings(_Section):
    provider: str = "console"


class TwilioSettings(_Section):
    account_sid: str | None = None
    auth_token: SecretStr | None = None
    from_number: str | None = None
    messaging_service_sid: str | None = None
    base_url: str = "https://api.twilio.com"
    timeout_seconds: float = Field(default=10.0, gt=0)
    status_callback_url: str | None = None


class CenterSettings(_Section):
    name: str = "Service Center"
    timezone: str = "Asia/Shanghai"
    locale: str = "zh_CN"
    help_text: str = "Reply STOP to opt out."

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return _check_timezone(value)


class TemplateSettings(_Section):
    # A directory that overrides shipped templates: <dir>/<plugin>/<channel>.<locale>.j2,
    # and <dir>/centers/<center>/<plugin>/... for one center.
    dir: Path | None = None


class DeliverySettings(_Section):
    max_attempts: int = Field(default=5, ge=1, le=50)
    min_backoff_ms: int = Field(default=1_000, ge=0)
    max_backoff_ms: int = Field(default=300_000, ge=0)
    time_limit_ms: int = Field(default=60_000, ge=1_000)


class SchedulerSettings(_Section):
    batch_size: int = Field(default=2_000, ge=1, le=100_000)
    # Customer ids per planning shard when a run on a remote broker is split across workers.
    shard_size: int = Field(default=100_000, ge=1)


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
    centers: dict[str, CenterSettings] = Field(default_factory=lambda: {"main": CenterSettings()})
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)
    templates: TemplateSettings = TemplateSettings()
    delivery: DeliverySettings = DeliverySettings()
    scheduler: SchedulerSettings = SchedulerSettings()

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
            if not (self.twilio.from_number or self.twilio.messaging_service_sid):
                raise ValueError(
                    "twilio.from_number or twilio.messaging_service_sid is required because a channel "
                    "uses provider 'twilio'"
                )
        if not self.centers:
            raise ValueError("at least one [centers.<code>] section is required")
        return self

    @property
    def default_center(self) -> str:
        """The center used when a command is not told which one: the first configured."""
        return next(iter(self.centers))


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
