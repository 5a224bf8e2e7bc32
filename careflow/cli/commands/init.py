"""``careflow init``: a commented careflow.toml and the migrated database."""

from __future__ import annotations

import os
from pathlib import Path

import click

from careflow.cli.base import err, friendly_errors, opened_runtime, out
from careflow.config import CONFIG_ENV, DEFAULT_FILE


def register(main: click.Group) -> None:
    """Add this module's commands to the ``careflow`` group (see careflow.cli.app)."""
    main.add_command(init)


INIT_TEMPLATE = """\
# careflow configuration. Environment variables override single keys:
# CAREFLOW_<SECTION>__<KEY>, e.g. CAREFLOW_TWILIO__AUTH_TOKEN. Keep secrets there.

[database]
url = "sqlite:///careflow.db"          # or postgresql+psycopg://user@host/dbname

[broker]
url = "local"                          # in-process; or redis://127.0.0.1:6379/0, amqp://guest:guest@127.0.0.1:5672/
queue = "careflow"
worker_threads = 4

[channels.sms]
provider = "console"                   # prints messages; "twilio" sends them

[channels.email]
provider = "console"                   # prints e-mails; "smtp" sends them with the [email] settings below
# enabled = false                      # switch e-mail off; care falls back to the next channel

[email]
# SMTP relay for provider = "smtp". The password is a secret: CAREFLOW_EMAIL__PASSWORD, never here.
# host = "smtp.example.com"            # or CAREFLOW_EMAIL__HOST
# port = 587
# security = "starttls"                # "starttls" (port 587), "tls" (implicit TLS, port 465) or "none"
# username = "careflow"                # or CAREFLOW_EMAIL__USERNAME
# from_address = "care@example.com"    # sender of centers without their own email_from
# With "smtp", [web] public_url and CAREFLOW_WEB__SECRET_KEY are required too (unsubscribe links).

[twilio]
# account_sid = "AC..."                # or CAREFLOW_TWILIO__ACCOUNT_SID
# auth_token = "..."                   # or CAREFLOW_TWILIO__AUTH_TOKEN (never commit it)
# from_number = "+8613800000000"       # or messaging_service_sid = "MG..."
# base_url = "https://api.twilio.com"  # any Twilio-compatible API

[centers.main]
name = "{center_name}"
timezone = "{timezone}"
locale = "{locale}"
{country_line}
help_text = "Reply STOP to opt out. Call us on 400-000-0000."
send_from = "09:00"                    # quiet hours: send only 09:00-20:00, customer's local time
send_until = "20:00"
frequency_cap = 2                      # at most 2 care messages per customer per 7 days
frequency_window_days = 7
stop_withdraws = "all"                 # STOP withdraws service and marketing; or "marketing"
plan_at = "08:00"                      # local time 'careflow scheduler' plans this center's day

[web]
# careflow serve: Twilio webhooks. public_url is the address Twilio calls (signatures use it).
# public_url = "https://care.example.com"

[delivery]
max_attempts = 5
min_backoff_ms = 1000
max_backoff_ms = 300000

[plugins.birthday]
enabled = true
"""


def _country_line(country: str | None, timezone: str, locale: str) -> tuple[str, str | None]:
    """The template's ``country`` line, and a note saying where a derived country came from."""
    from careflow.countries import center_country, check_country, country_of_timezone

    comment = "# phone numbers written without + are read in this country (ISO 3166)"
    if country is not None:
        try:
            return f'country = "{check_country(country)}"'.ljust(39) + comment, None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--country'") from None
    derived = center_country(None, timezone, locale)
    if derived is None:
        return '# country = "CN"'.ljust(39) + comment + "; unset: from the locale", None
    source = f"the time zone {timezone}" if country_of_timezone(timezone) else f"the locale {locale}"
    note = f"country {derived} (from {source}): numbers without + are read there; --country to change it"
    return f'country = "{derived}"'.ljust(39) + comment, note


@click.command()
@click.option("--center-name", default="Main Service Center", show_default=True)
@click.option("--timezone", default="Asia/Shanghai", show_default=True)
@click.option("--locale", default="zh_CN", show_default=True)
@click.option(
    "--country",
    help="ISO 3166 code (CN, GB) phone numbers without + are read in [default: the time zone's].",
)
@click.option("--force", is_flag=True, help="Overwrite an existing careflow.toml.")
@friendly_errors
def init(center_name: str, timezone: str, locale: str, country: str | None, force: bool) -> None:
    """Write a commented careflow.toml (here, or at CAREFLOW_CONFIG) and create the migrated database."""
    path = Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else Path.cwd() / DEFAULT_FILE
    if path.exists() and not force:
        err.print(f"{path} exists; keeping it (use --force to overwrite). Migrating its database.")
    else:
        country_line, note = _country_line(country, timezone, locale)
        path.write_text(
            INIT_TEMPLATE.format(
                center_name=center_name, timezone=timezone, locale=locale, country_line=country_line
            ),
            "utf-8",
        )
        out.print(f"wrote {path}")
        if note:
            out.print(note, highlight=False)
    with opened_runtime(migrate_schema=True) as runtime:
        url = runtime.engine.url.render_as_string(hide_password=True)
        out.print(f"database ready: {url}")
