"""Who may be contacted, on which channel, and why not: decided before anything is queued."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import BigInteger, any_, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from careflow.storage.models import Consent, Customer

# Which customer field holds the address for each channel.
ADDRESS_FIELDS: dict[str, str] = {"sms": "phone", "whatsapp": "whatsapp", "email": "email"}
# How a missing address reads in a recorded reason.
_ADDRESS_WORDS: dict[str, str] = {"phone": "phone", "whatsapp": "WhatsApp number", "email": "e-mail address"}


@dataclass(frozen=True)
class ChannelChoice:
    """The channel and address an event goes to, or ``None`` with the reason nobody can be reached.

    ``why`` is recorded on the event either way ("preferred whatsapp",
    "sms: no phone; fell back to email").
    """

    channel: str | None
    recipient: str | None
    reason: str | None
    why: str = ""


ConsentMap = dict[tuple[int, str, str], bool]


def load_consents(
    session: Session,
    customer_ids: Iterable[int],
    *,
    channels: Collection[str] | None = None,
    purposes: Collection[str] | None = None,
) -> ConsentMap:
    """Consents for many customers in one query: (customer, channel, purpose) -> granted.

    ``channels`` and ``purposes``, when given, limit what is read to the consents a caller
    can ask about (the others are simply absent from the map).
    """
    ids = sorted(set(customer_ids))
    only = []
    if channels is not None:
        only.append(Consent.channel.in_(sorted(channels)))
    if purposes is not None:
        only.append(Consent.purpose.in_(sorted(purposes)))
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
            select(Consent.customer_id, Consent.channel, Consent.purpose, Consent.granted).where(
                wanted, *only
            )
        )
        for customer_id, channel, purpose, granted in rows:
            result[(customer_id, channel, purpose)] = granted
    return result


def address_for(customer: Customer, channel: str) -> str | None:
    field = ADDRESS_FIELDS.get(channel)
    return getattr(customer, field) if field else None


def choose_channel(
    customer: Customer,
    purpose: str,
    channels: Sequence[str],
    consents: ConsentMap,
    *,
    preferred: str | None = None,
    unavailable: Mapping[str, str] | None = None,
) -> ChannelChoice:
    """The preferred channel if it reaches the customer, else the first in ``channels`` that does.

    A channel reaches a customer when it is available (configured and switched on; else
    ``unavailable`` says why), the customer has an address there and consented to ``purpose``
    on it. Every channel passed over is named in the recorded ``why``.
    """
    unavailable = unavailable or {}
    candidates = [preferred] if preferred else []
    candidates += [c for c in channels if c != preferred]
    why_not: list[str] = []
    for channel in candidates:
        problem = unavailable.get(channel) or _unreachable(customer, channel, purpose, consents)
        if problem:
            why_not.append(f"{channel}: {problem}")
            continue
        address = address_for(customer, channel)
        if channel == preferred:
            why = f"preferred {channel}"
        elif not why_not:
            why = f"{channel}: first in the center's channel order"
        else:
            why = f"{'preferred ' if preferred else ''}{'; '.join(why_not)}; fell back to {channel}"
        return ChannelChoice(channel, address, None, why)
    reason = "unreachable: " + "; ".join(why_not or ["no channel configured"])
    return ChannelChoice(None, None, reason, reason)


def _unreachable(customer: Customer, channel: str, purpose: str, consents: ConsentMap) -> str | None:
    """Why ``channel`` cannot reach the customer for ``purpose``, or None when it can."""
    if not address_for(customer, channel):
        field = ADDRESS_FIELDS.get(channel, "address")
        return f"no {_ADDRESS_WORDS.get(field, field)}"
    # Opt-in: no recorded consent means no consent; a recorded "no" is an opt-out.
    granted = consents.get((customer.id, channel, purpose))
    if granted is None:
        return f"no {purpose} consent"
    if not granted:
        return f"opted out of {purpose}"
    return None
