"""Who may be contacted, on which channel, and why not: decided before anything is queued."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import BigInteger, any_, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from careflow.models import Consent, Customer

# Which customer field holds the address for each channel.
ADDRESS_FIELDS: dict[str, str] = {"sms": "phone", "whatsapp": "phone", "email": "email"}


@dataclass(frozen=True)
class ChannelChoice:
    """The channel and address an event goes to, or ``None`` with the reason nobody can be reached."""

    channel: str | None
    recipient: str | None
    reason: str | None


ConsentMap = dict[tuple[int, str, str], bool]


def load_consents(session: Session, customer_ids: Iterable[int]) -> ConsentMap:
    """Consents for many customers in one query: (customer, channel, purpose) -> granted."""
    ids = sorted(set(customer_ids))
    result: ConsentMap = {}
    postgres = session.get_bind().dialect.name == "postgresql"
    for start in range(0, len(ids), 5_000):
        chunk = ids[start : start + 5_000]
        # PostgreSQL: one array parameter, not 5,000 placeholders for the driver to parse.
        wanted = (
            Consent.customer_id == any_(literal(chunk, ARRAY(BigInteger)))
            if postgres
            else Consent.customer_id.in_(chunk)
        )
        rows = session.execute(
            select(Consent.customer_id, Consent.channel, Consent.purpose, Consent.granted).where(wanted)
        )
        for customer_id, channel, purpose, granted in rows:
            result[(customer_id, channel, purpose)] = granted
    return result


def address_for(customer: Customer, channel: str) -> str | None:
    field = ADDRESS_FIELDS.get(channel)
    return getattr(customer, field) if field else None


def choose_channel(
    customer: Customer, purpose: str, channels: Sequence[str], consents: ConsentMap
) -> ChannelChoice:
    """The first channel in ``channels`` where the customer has an address and consented."""
    why_not = []
    for channel in channels:
        address = address_for(customer, channel)
        if not address:
            why_not.append(f"{channel}: no {ADDRESS_FIELDS.get(channel, 'address')}")
            continue
        # Opt-in: no recorded consent means no consent.
        if not consents.get((customer.id, channel, purpose), False):
            why_not.append(f"{channel}: no {purpose} consent")
            continue
        return ChannelChoice(channel, address, None)
    return ChannelChoice(None, None, "unreachable: " + "; ".join(why_not or ["no channel configured"]))


def consent_granted(session: Session, customer_id: int, channel: str, purpose: str) -> bool:
    """Checked again at send time: an opt-out that arrived after planning still wins."""
    granted = session.scalar(
        select(Consent.granted).where(
            Consent.customer_id == customer_id, Consent.channel == channel, Consent.purpose == purpose
        )
    )
    return bool(granted)
