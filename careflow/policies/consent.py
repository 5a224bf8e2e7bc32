"""Consent: the one place it is recorded, with its history, and the rule that keeps opt-outs.

A customer's own withdrawal (a STOP reply, an unsubscribe link, a carrier opt-out, a request
staff wrote down) is never undone by the center's systems: an import, the console import or
an API sync that says "yes" leaves it withdrawn. Only the customer's own re-consent lifts it:
a START reply from the same address, or an explicit re-consent that staff record with its
date and evidence (``careflow consent grant``, or the form on the console's customer card).

Every change is also written to ``consent_changes`` (value, source, when, by whom), which the
customer card shows. A customer's own opt-out is also kept by address (``address_opt_outs``,
hashed), so a card imported later with the same phone or e-mail cannot be granted consent
either.
"""

from __future__ import annotations

import enum
import hashlib
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from careflow.care import Purpose
from careflow.config import CenterSettings
from careflow.errors import CareflowError
from careflow.storage.models import AddressOptOut, Consent, ConsentChange, Customer, utcnow

# Carrier and CTIA conventions plus the Chinese industry ones (T / TD / 退订).
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "T", "TD", "退订"})
START_WORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_WORDS = frozenset({"HELP"})

ALL_PURPOSES = (Purpose.SERVICE, Purpose.MARKETING)

# Sources careflow records. Anything else (a file name, "api", "test") counts as a system.
IMPORT = "import"
REPLY_STOP = "reply:STOP"
REPLY_START = "reply:START"
UNSUBSCRIBE_LINK = "unsubscribe-link"
CARRIER_OPT_OUT = "provider:21610"
CUSTOMER_REQUEST = "customer-request"  # staff wrote down the customer's own request to stop
RE_CONSENT = "re-consent"  # staff recorded the customer's explicit, dated, evidenced re-consent

# The customer's own word: a withdrawal from one of these sticks until the customer re-consents.
_CUSTOMERS_OWN = frozenset(
    {REPLY_STOP, REPLY_START, UNSUBSCRIBE_LINK, CARRIER_OPT_OUT, CUSTOMER_REQUEST, RE_CONSENT}
)
# Grants that may lift a customer's own withdrawal: only the customer's own re-consent.
_LIFTS_WITHDRAWAL = frozenset({REPLY_START, RE_CONSENT})


class Keyword(enum.StrEnum):
    STOP = "stop"
    START = "start"
    HELP = "help"


class ConsentRefused(CareflowError):
    """A re-consent that cannot be recorded as given (no evidence, dated before the opt-out, ...)."""


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
    return ALL_PURPOSES


def is_customers_own(source: str) -> bool:
    """Whether a consent with this source was given or withdrawn by the customer personally."""
    return source in _CUSTOMERS_OWN


def address_key(channel: str, address: str) -> str:
    """How an address is kept in ``address_opt_outs``: hashed, so an erased card leaves no number."""
    canonical = address.strip().removeprefix("whatsapp:")
    if channel == "email":
        canonical = canonical.lower()
    return hashlib.sha256(f"{channel}:{canonical}".encode()).hexdigest()


def card_address(customer: Customer, channel: str) -> str | None:
    """The card's address on ``channel`` (phone for SMS, the WhatsApp number, the e-mail)."""
    return {"sms": customer.phone, "whatsapp": customer.whatsapp, "email": customer.email}.get(channel)


@dataclass
class ConsentResult:
    """What ``record_consent`` did: the purposes it changed and those it kept withdrawn, and why."""

    changed: list[str] = field(default_factory=list)
    kept_withdrawn: dict[str, str] = field(default_factory=dict)  # purpose -> why

    def __bool__(self) -> bool:
        return bool(self.changed)


def record_consent(
    session: Session,
    customer_id: int,
    channel: str,
    purposes: Iterable[Purpose | str] = ALL_PURPOSES,
    *,
    granted: bool,
    source: str,
    actor: str | None = None,
    note: str | None = None,
    effective_at: datetime | None = None,
    address: str | None = None,
) -> ConsentResult:
    """Set consent on ``channel`` for ``purposes``, keep its history, never undo the customer's opt-out.

    ``source`` says where the value comes from (``import``, ``reply:STOP``, ...), ``actor`` who
    recorded it (a console user, a file), ``effective_at`` when the customer gave or withdrew
    it (default: now). ``address`` is the address the customer's own word came from (the
    phone a STOP was sent from); by default the card's address on ``channel``.
    A grant from anything but the customer's own re-consent leaves a customer's withdrawal as
    it is and says why in ``kept_withdrawn``. A ``re-consent`` needs ``note`` (the evidence)
    and ``effective_at`` no earlier than the withdrawal it lifts; otherwise ``ConsentRefused``.
    """
    now = utcnow()
    when = effective_at or now
    wanted = [str(p) for p in purposes]
    existing = {
        c.purpose: c
        for c in session.scalars(
            select(Consent).where(Consent.customer_id == customer_id, Consent.channel == channel)
        )
    }
    customer = session.get(Customer, customer_id)
    address = address if address is not None else (card_address(customer, channel) if customer else None)
    if source == RE_CONSENT:
        _check_re_consent(session, customer_id, channel, wanted, note, effective_at, now)
    result = ConsentResult()
    blocked = (
        {} if not granted or source in _LIFTS_WITHDRAWAL else _opted_out(session, channel, address, wanted)
    )
    for purpose in wanted:
        row = existing.get(purpose)
        if granted and source not in _LIFTS_WITHDRAWAL:
            if row is not None and not row.granted and is_customers_own(row.source):
                result.kept_withdrawn[purpose] = f"the customer withdrew it ({row.source})"
                continue
            if purpose in blocked:
                result.kept_withdrawn[purpose] = f"the customer opted out from {address} ({blocked[purpose]})"
                if row is None or row.granted:  # the card shows the opt-out that holds it back
                    _set(session, customer_id, channel, purpose, row, False, blocked[purpose], result)
                    _history(
                        session,
                        customer_id,
                        channel,
                        purpose,
                        False,
                        blocked[purpose],
                        actor,
                        f"opted out from this address before; {source} asked to grant it",
                        when,
                    )
                continue
        # Unchanged, unless the customer now says in person what a system said before: that
        # must be recorded as theirs, or a later import could lift it.
        if (
            row is not None
            and row.granted == granted
            and not (is_customers_own(source) > is_customers_own(row.source))
        ):
            continue
        _set(session, customer_id, channel, purpose, row, granted, source, result)
        _history(session, customer_id, channel, purpose, granted, source, actor, note, when)
    if address and is_customers_own(source):
        remember_by_address(session, channel, address, wanted, granted=granted, source=source, now=now)
    session.flush()
    return result


def _set(
    session: Session,
    customer_id: int,
    channel: str,
    purpose: str,
    row: Consent | None,
    granted: bool,
    source: str,
    result: ConsentResult,
) -> None:
    if row is None:
        session.add(
            Consent(customer_id=customer_id, channel=channel, purpose=purpose, granted=granted, source=source)
        )
    else:
        row.granted, row.source = granted, source
    result.changed.append(purpose)


def _history(
    session: Session,
    customer_id: int,
    channel: str,
    purpose: str,
    granted: bool,
    source: str,
    actor: str | None,
    note: str | None,
    when: datetime,
) -> None:
    session.add(
        ConsentChange(
            customer_id=customer_id,
            channel=channel,
            purpose=purpose,
            granted=granted,
            source=source,
            actor=actor,
            note=note,
            effective_at=when,
        )
    )


def _opted_out(session: Session, channel: str, address: str | None, purposes: list[str]) -> dict[str, str]:
    """The purposes the customer opted out of from ``address`` (on any card): purpose -> source."""
    if not address:
        return {}
    rows = session.execute(
        select(AddressOptOut.purpose, AddressOptOut.source).where(
            AddressOptOut.channel == channel,
            AddressOptOut.address_hash == address_key(channel, address),
            AddressOptOut.purpose.in_(purposes),
        )
    )
    return {purpose: source for purpose, source in rows}


def remember_by_address(
    session: Session,
    channel: str,
    address: str,
    purposes: list[str],
    *,
    granted: bool,
    source: str,
    now: datetime,
) -> None:
    """Keep a customer's own opt-out by address too (on no card yet, say); their re-consent clears it."""
    key = address_key(channel, address)
    if granted:
        session.execute(
            delete(AddressOptOut).where(
                AddressOptOut.channel == channel,
                AddressOptOut.address_hash == key,
                AddressOptOut.purpose.in_(purposes),
            )
        )
        return
    have = set(
        session.scalars(
            select(AddressOptOut.purpose).where(
                AddressOptOut.channel == channel, AddressOptOut.address_hash == key
            )
        )
    )
    for purpose in purposes:
        if purpose not in have:
            session.add(
                AddressOptOut(
                    channel=channel, purpose=purpose, address_hash=key, source=source, created_at=now
                )
            )


def _check_re_consent(
    session: Session,
    customer_id: int,
    channel: str,
    purposes: list[str],
    note: str | None,
    effective_at: datetime | None,
    now: datetime,
) -> None:
    """A re-consent must be evidenced, dated, and given after the customer's withdrawal it lifts."""
    if not note or not note.strip():
        raise ConsentRefused("a re-consent needs its evidence: how and where the customer gave it")
    if effective_at is None:
        raise ConsentRefused("a re-consent needs the date the customer gave it")
    if effective_at > now:
        raise ConsentRefused(
            f"a re-consent cannot be dated in the future ({effective_at.date().isoformat()})"
        )
    last = session.scalar(
        select(ConsentChange.effective_at)
        .where(
            ConsentChange.customer_id == customer_id,
            ConsentChange.channel == channel,
            ConsentChange.purpose.in_(purposes),
            ConsentChange.granted.is_(False),
            ConsentChange.source.in_(sorted(_CUSTOMERS_OWN)),
        )
        .order_by(ConsentChange.effective_at.desc())
        .limit(1)
    )
    if last is not None and effective_at < last:
        raise ConsentRefused(
            f"the customer withdrew {channel} consent on {last.date().isoformat()}, after the "
            f"re-consent's date {effective_at.date().isoformat()}: a re-consent must come after it"
        )


def withdraw_for_carrier_opt_out(
    session: Session, customer_id: int, channel: str, address: str | None = None
) -> list[str]:
    """The carrier refused because the handset replied STOP to the sender: every purpose is blocked."""
    return record_consent(
        session,
        customer_id,
        channel,
        ALL_PURPOSES,
        granted=False,
        source=CARRIER_OPT_OUT,
        actor="carrier",
        address=address,
    ).changed


def history(session: Session, customer_id: int) -> list[ConsentChange]:
    """Every consent change of a customer, newest first (what the card and ``consent show`` list)."""
    return list(
        session.scalars(
            select(ConsentChange)
            .where(ConsentChange.customer_id == customer_id)
            .order_by(ConsentChange.effective_at.desc(), ConsentChange.id.desc())
        )
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
