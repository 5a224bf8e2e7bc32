"""How careflow treats each Twilio error: permanent, transient or opt-out, and what it does."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ErrorClass(enum.StrEnum):
    PERMANENT = "permanent"  # the event fails; retrying cannot help
    TRANSIENT = "transient"  # retried with backoff
    OPT_OUT = "opt-out"  # the recipient unsubscribed at the carrier: fail, never retry


@dataclass(frozen=True)
class KnownError:
    code: int
    cls: ErrorClass
    meaning: str


KNOWN_ERRORS: dict[int, KnownError] = {
    e.code: e
    for e in (
        KnownError(20003, ErrorClass.PERMANENT, "authentication failed: check twilio.account_sid/auth_token"),
        KnownError(20404, ErrorClass.PERMANENT, "resource not found"),
        KnownError(20429, ErrorClass.TRANSIENT, "too many requests: back off"),
        KnownError(20500, ErrorClass.TRANSIENT, "Twilio internal error"),
        KnownError(20503, ErrorClass.TRANSIENT, "Twilio service unavailable"),
        KnownError(21211, ErrorClass.PERMANENT, "invalid 'To' phone number"),
        KnownError(21212, ErrorClass.PERMANENT, "invalid 'From' phone number"),
        KnownError(21408, ErrorClass.PERMANENT, "permission to send to this region is not enabled"),
        KnownError(21606, ErrorClass.PERMANENT, "the 'From' number cannot send SMS"),
        KnownError(21610, ErrorClass.OPT_OUT, "recipient unsubscribed (replied STOP)"),
        KnownError(21612, ErrorClass.PERMANENT, "cannot route to this number"),
        KnownError(21614, ErrorClass.PERMANENT, "'To' number is not a mobile number"),
        KnownError(21617, ErrorClass.PERMANENT, "message body exceeds 1600 characters"),
        KnownError(30001, ErrorClass.TRANSIENT, "queue overflow at Twilio"),
        KnownError(30003, ErrorClass.PERMANENT, "unreachable destination handset"),
        KnownError(30005, ErrorClass.PERMANENT, "unknown destination handset"),
        KnownError(30006, ErrorClass.PERMANENT, "landline or unreachable carrier"),
        KnownError(30007, ErrorClass.PERMANENT, "blocked as spam by the carrier"),
        KnownError(63003, ErrorClass.PERMANENT, "WhatsApp: the recipient number is not on WhatsApp"),
        KnownError(63007, ErrorClass.PERMANENT, "WhatsApp: the 'From' number is not a WhatsApp sender"),
        KnownError(63018, ErrorClass.TRANSIENT, "WhatsApp: sender's rate limit exceeded"),
        KnownError(63024, ErrorClass.PERMANENT, "WhatsApp: invalid message recipient"),
        KnownError(
            63016, ErrorClass.PERMANENT, "WhatsApp: outside the 24-hour window, use an approved template"
        ),
    )
}


def classify(status: int | None, code: int | None) -> ErrorClass:
    """Classify an API error from its HTTP status and Twilio code."""
    if code is not None and code in KNOWN_ERRORS:
        return KNOWN_ERRORS[code].cls
    if status is None or status == 429 or status >= 500:
        return ErrorClass.TRANSIENT
    return ErrorClass.PERMANENT
