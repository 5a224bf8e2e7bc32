"""``careflow doctor``: check everything a care run depends on and say how to fix what is wrong."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from careflow.config import Settings, load_settings
from careflow.errors import CareflowError
from careflow.storage.db import alembic_config, make_engine


@dataclass(frozen=True)
class Check:
    """One line of the checklist: what was checked, whether it passed, and how to fix it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def run_checks(config_loader: Callable[[], Settings] = load_settings) -> Iterator[Check]:
    """Every check, in dependency order; later checks are skipped when their basis is broken."""
    try:
        settings = config_loader()
    except CareflowError as exc:
        yield Check(
            "config", False, str(exc), "fix the named key in careflow.toml or its CAREFLOW_* variable"
        )
        return
    yield Check("config", True, "careflow.toml and CAREFLOW_* variables are valid")
    database = check_database(settings)
    yield database
    yield check_broker(settings)
    yield from check_providers(settings)
    if database.ok:
        yield from check_templates(settings)


def check_database(settings: Settings) -> Check:
    """The database answers and its schema is at the newest migration."""
    url = settings.database.url
    engine = make_engine(url)
    shown = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = set(MigrationContext.configure(conn).get_current_heads())
        heads = set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())
    except Exception as exc:
        return Check(
            "database",
            False,
            f"{shown}: cannot connect: {_first_line(exc)}",
            "check [database] url (or CAREFLOW_DATABASE__URL) and that the server is running",
        )
    finally:
        engine.dispose()
    if not current:
        return Check(
            "database", False, f"{shown}: not initialised", "run 'careflow init' to create the schema"
        )
    if current != heads:
        return Check(
            "database",
            False,
            f"{shown}: schema at {', '.join(sorted(current))}, "
            f"this careflow needs {', '.join(sorted(heads))}",
            "run 'careflow init' to apply the pending migrations (it keeps careflow.toml)",
        )
    return Check("database", True, f"{shown}: reachable, schema up to date ({', '.join(sorted(heads))})")


def check_broker(settings: Settings) -> Check:
    """The broker answers (the in-process one always does)."""
    url = settings.broker.url
    if url == "local":
        return Check("broker", True, "local (in-process): 'careflow run' delivers by itself")
    shown = url.split("@")[-1]  # never print credentials
    try:
        if url.startswith(("redis://", "rediss://")):
            import redis

            client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
            client.ping()
            client.close()
        else:
            import pika

            params = pika.URLParameters(url)
            params.socket_timeout = 3
            params.blocked_connection_timeout = 3
            params.connection_attempts = 1
            pika.BlockingConnection(params).close()
    except Exception as exc:
        return Check(
            "broker",
            False,
            f"{shown}: cannot connect: {_first_line(exc) or type(exc).__name__}",
            "start the broker or fix [broker] url (CAREFLOW_BROKER__URL)",
        )
    return Check("broker", True, f"{shown}: reachable")


def check_providers(settings: Settings) -> Iterator[Check]:
    """Each channel's provider accepts the configured credentials (one cheap authenticated call)."""
    for channel, chosen in settings.channels.items():
        if chosen.provider != "twilio":
            yield Check(f"provider {channel}", True, f"{chosen.provider}: nothing to authenticate")
            continue
        base = settings.twilio.base_url.rstrip("/")
        problem = _twilio_auth_problem(settings)
        if problem is not None:
            detail, fix = problem
            yield Check(f"provider {channel}", False, f"twilio at {base}: {detail}", fix)
            continue
        sender = settings.twilio.messaging_service_sid or settings.twilio.from_number
        yield Check(
            f"provider {channel}", True, f"twilio at {base}: credentials accepted, sending as {sender}"
        )


def _twilio_auth_problem(settings: Settings) -> tuple[str, str] | None:
    """None when Twilio accepts the credentials, else (what is wrong, how to fix it)."""
    import json

    from careflow.channels.twilio_sms import twilio_client

    cfg = settings.twilio
    token = cfg.auth_token.get_secret_value() if cfg.auth_token else ""
    url = f"{cfg.base_url.rstrip('/')}/2010-04-01/Accounts/{cfg.account_sid}/Messages.json"
    try:
        # Listing one message is authenticated and cheap, and proves the account can use the
        # Messages API careflow sends through; the SDK's own HTTP client, so proxies and TLS match.
        response = twilio_client(cfg).http_client.request(
            "GET", url, params={"PageSize": 1}, auth=(cfg.account_sid or "", token)
        )
    except Exception as exc:
        return (
            f"no answer: {type(exc).__name__}: {_first_line(exc)}",
            "check [twilio] base_url and the network",
        )
    if response.status_code == 200:
        return None
    try:
        message = json.loads(response.text).get("message", "")
    except (ValueError, AttributeError):
        message = ""
    if response.status_code in (401, 403):
        return (
            f"HTTP {response.status_code}: credentials refused {message}".rstrip(),
            "set the right twilio.account_sid and CAREFLOW_TWILIO__AUTH_TOKEN",
        )
    return f"HTTP {response.status_code} {message}".rstrip(), "check [twilio] base_url and account_sid"


def check_templates(settings: Settings) -> Iterator[Check]:
    """Every template passes the one linter sends go through (careflow.rendering.lint), samples and all."""
    from careflow.rendering.database import parse_name
    from careflow.rendering.lint import Severity, lint_store
    from careflow.runtime import Runtime

    try:
        runtime = Runtime.build(settings)
    except CareflowError as exc:
        yield Check("templates", False, f"cannot load plugins or templates: {exc}", "fix the named setting")
        return
    try:
        problems = [f"plugin {f.name} failed to load: {f.error}" for f in runtime.registry.failures]
        keys = [key for n in runtime.templates.loader.list_templates() if (key := parse_name(n)) is not None]
        for name in runtime.registry.enabled(settings):
            channels = {channel for _scope, template, channel, _locale in keys if template == name}
            if not channels & set(settings.channels):
                problems.append(f"plugin {name}: no template for any configured channel")
        findings = lint_store(runtime)
        problems += [str(f) for f in findings if f.severity is Severity.ERROR]
        warnings = [str(f) for f in findings if f.severity is Severity.WARNING]
        if problems:
            yield Check(
                "templates",
                False,
                "; ".join(problems),
                "fix the named template ('careflow templates lint' lists every finding); 'careflow events "
                "--status failed' lists affected events and 'careflow retry' sends them again",
            )
        else:
            detail = f"{len(keys)} template variant(s) render for sample data and pass lint"
            if warnings:
                detail += f"; {len(warnings)} warning(s): " + "; ".join(warnings)
            yield Check("templates", True, detail)
    finally:
        runtime.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]
