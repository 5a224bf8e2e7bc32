"""``careflow consent show|grant|withdraw``: a customer's consents, their history, and re-consent.

An import or the console never lifts a withdrawal the customer made themselves; ``grant``
is how staff record the customer's own, explicit re-consent: with its date and evidence.
"""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import click
from rich.table import Table

from careflow.care import Purpose
from careflow.cli.base import center_named, customer_by_external_id, friendly_errors, opened_runtime, out
from careflow.config import CHANNEL_NAMES
from careflow.policies.consent import ALL_PURPOSES, CUSTOMER_REQUEST, RE_CONSENT, history, record_consent
from careflow.storage.models import Consent, Customer, utcnow


def register(main: click.Group) -> None:
    """Add this module's commands to the ``careflow`` group (see careflow.cli.app)."""
    main.add_command(consent)


_center_option = click.option(
    "--center", "center_code", help="Center code from careflow.toml (default: the first)."
)
_channel_option = click.option(
    "--channel", type=click.Choice(sorted(CHANNEL_NAMES)), required=True, help="The channel it is for."
)
_purpose_option = click.option(
    "--purpose",
    type=click.Choice(["all", *(str(p) for p in ALL_PURPOSES)]),
    default="all",
    show_default=True,
    help="Service messages, marketing, or both.",
)
_by_option = click.option("--by", "actor", help="Who records it (your name or e-mail), kept in the history.")


def _purposes(purpose: str) -> list[Purpose]:
    return list(ALL_PURPOSES) if purpose == "all" else [Purpose(purpose)]


def _given_at(customer: Customer, given: datetime) -> datetime:
    """When the customer gave it, as an instant in the customer's zone.

    A bare date is the start of that day, so a re-consent is never taken as later than an
    opt-out of the same day unless its time says so; today's date means now.
    """
    zone = ZoneInfo(customer.timezone or customer.center.timezone)
    if given.time() != time(0):
        return given.replace(tzinfo=zone)
    now = utcnow().astimezone(zone)
    return now if given.date() == now.date() else datetime.combine(given.date(), time(0), tzinfo=zone)


@click.group()
def consent() -> None:
    """Consents per channel and purpose, their history, and recording a customer's own re-consent."""


@consent.command(name="show")
@click.argument("customer_id")
@_center_option
@friendly_errors
def consent_show(customer_id: str, center_code: str | None) -> None:
    """Show CUSTOMER_ID's consents and every change to them (value, source, when, by whom)."""
    with opened_runtime() as runtime, runtime.sessions() as session:
        center = center_named(session, runtime.settings, center_code)
        customer = customer_by_external_id(session, center, customer_id)
        now = Table(title=f"{customer.name} ({customer.external_id}): consents")
        for column in ("channel", "purpose", "consent", "source"):
            now.add_column(column)
        for row in sorted(customer.consents, key=lambda c: (c.channel, c.purpose)):
            now.add_row(row.channel, row.purpose, _word(row), row.source)
        out.print(now)
        # One line per change, never squeezed into table cells: evidence notes can be long.
        out.print("history, newest first:", highlight=False)
        zone = ZoneInfo(customer.timezone or center.timezone)
        for change in history(session, customer.id):
            when = change.effective_at.astimezone(zone).strftime("%Y-%m-%d %H:%M")
            line = (
                f"  {when}  {change.channel}/{change.purpose}  "
                f"{'given' if change.granted else 'withdrawn'}  {change.source}"
            )
            line += f"  by {change.actor}" if change.actor else ""
            line += f"  ({change.note})" if change.note else ""
            out.print(line, highlight=False, markup=False)


def _word(row: Consent) -> str:
    return "given" if row.granted else "withdrawn"


@consent.command(name="grant")
@click.argument("customer_id")
@_channel_option
@_purpose_option
@click.option(
    "--date",
    "given",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]),
    required=True,
    help="When the customer gave it (YYYY-MM-DD [HH:MM], their local time); after any opt-out it lifts.",
)
@click.option(
    "--evidence",
    required=True,
    help='How and where the customer gave it, e.g. "signed form at the service desk, ref 2291".',
)
@_by_option
@_center_option
@friendly_errors
def consent_grant(
    customer_id: str,
    channel: str,
    purpose: str,
    given: datetime,
    evidence: str,
    actor: str | None,
    center_code: str | None,
) -> None:
    """Record CUSTOMER_ID's own, explicit re-consent: the one way besides a START reply to lift an opt-out."""
    _record(
        customer_id,
        center_code,
        channel,
        purpose,
        granted=True,
        source=RE_CONSENT,
        actor=actor or "careflow consent grant",
        note=evidence,
        given=given,
    )


@consent.command(name="withdraw")
@click.argument("customer_id")
@_channel_option
@_purpose_option
@click.option("--note", help='How the customer asked, e.g. "phoned the service desk".')
@_by_option
@_center_option
@friendly_errors
def consent_withdraw(
    customer_id: str, channel: str, purpose: str, note: str | None, actor: str | None, center_code: str | None
) -> None:
    """Record that CUSTOMER_ID asked to stop (by phone, at the desk): it sticks like a STOP reply."""
    _record(
        customer_id,
        center_code,
        channel,
        purpose,
        granted=False,
        source=CUSTOMER_REQUEST,
        actor=actor or "careflow consent withdraw",
        note=note,
    )


def _record(
    customer_id: str,
    center_code: str | None,
    channel: str,
    purpose: str,
    *,
    granted: bool,
    source: str,
    actor: str,
    note: str | None,
    given: datetime | None = None,
) -> None:
    """Record what the customer said, as of ``given`` (default: now), and say what changed."""
    with opened_runtime() as runtime, runtime.sessions.begin() as session:
        center = center_named(session, runtime.settings, center_code)
        customer = customer_by_external_id(session, center, customer_id)
        result = record_consent(
            session,
            customer.id,
            channel,
            _purposes(purpose),
            granted=granted,
            source=source,
            actor=actor,
            note=note,
            effective_at=_given_at(customer, given) if given is not None else None,
        )
    word = "given" if granted else "withdrawn"
    changed = ", ".join(result.changed) or f"nothing: it was already {word}"
    out.print(f"{customer.external_id}: {channel} consent recorded as {word} ({changed})")
