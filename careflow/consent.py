"""Opt-out and opt-in: inbound keywords, carrier opt-outs (Twilio 21610), and what they withdraw."""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from careflow.config import CenterSettings
from careflow.models import Consent, Purpose

# Carrier and CTIA conventions plus the Chinese industry ones (T / TD / 退订).
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "T", "TD", "退订"})
START_WORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_WORDS = frozenset({"HELP"})


class Keyword(enum.StrEnum):
    STOP = "stop"
    START = "start"
    HELP = "help"


def keyword_of(body: str) -> Keyword | None:
    """The keyword a whole message amounts to ("stop", " Stop. ", "退订"), or None for ordinary text.

    Only a message that is the keyword alone counts: "don't stop the reminders" is a reply,
    not an opt-out, which is how carriers treat it too.
    """
    text = unicodedata.normalize("NFKC", body).strip().strip(".!。！").strip().upper()
    if text in STOP_WORDS:
        return Keyword.STOP
    if text in START_WORDS:
        return Keyword.START
    if text in HELP_WORDS:
        return Keyword.HELP
    return None


def purposes_withdrawn_by_stop(center: CenterSettings | None) -> tuple[Purpose, ...]:
    """A STOP withdraws every purpose unless the center's policy keeps service messages."""
    if center is not None and center.stop_withdraws == "marketing":
        return (Purpose.MARKETING,)
    return (Purpose.SERVICE, Purpose.MARKETING)


def record_consent(
    session: Session,
    customer_id: int,
    channel: str,
    purposes: Iterable[Purpose],
    *,
    granted: bool,
    source: str,
) -> list[str]:
    """Set consent for ``purposes`` on ``channel``; returns the purposes whose value changed."""
    existing = {
        c.purpose: c
        for c in session.scalars(
            select(Consent).where(Consent.customer_id == customer_id, Consent.channel == channel)
        )
    }
    changed = []
    for purpose in purposes:
        row = existing.get(str(purpose))
        if row is None:
            session.add(
                Consent(
                    customer_id=customer_id,
                    channel=channel,
                    purpose=str(purpose),
                    granted=granted,
                    source=source,
                )
            )
            changed.append(str(purpose))
        elif row.granted != granted:
            row.granted = granted
            row.source = source
            changed.append(str(purpose))
    session.flush()
    return changed


def withdraw_for_carrier_opt_out(session: Session, customer_id: int, channel: str) -> list[str]:
    """The carrier refused because the handset replied STOP to the sender: every purpose is blocked."""
    return record_consent(
        session,
        customer_id,
        channel,
        (Purpose.SERVICE, Purpose.MARKETING),
        granted=False,
        source="provider:21610",
    )


def mask_phone(address: str | None) -> str:
    """Phone numbers in logs: country code and last two digits only (+86*********00)."""
    if not address:
        return "-"
    prefix = "whatsapp:" if address.startswith("whatsapp:") else ""
    number = address[len(prefix) :]
    if len(number) <= 5:
        return prefix + "*" * len(number)
    return prefix + number[:3] + "*" * (len(number) - 5) + number[-2:]
