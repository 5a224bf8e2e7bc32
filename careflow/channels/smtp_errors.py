"""How careflow treats SMTP replies at send time: 5xx is permanent, 4xx transient, like Twilio's classes."""

from __future__ import annotations

from careflow.channels.twilio_errors import ErrorClass

# Replies worth explaining in the event's reason (RFC 5321 and common practice).
SMTP_MEANINGS: dict[int, str] = {
    421: "server closing the connection (busy or shutting down)",
    450: "mailbox temporarily unavailable (greylisting or busy)",
    451: "server error, try again later",
    452: "server out of storage",
    530: "the server requires authentication or STARTTLS: check [email] security/username",
    535: "login failed: check email.username and email.password",
    550: "mailbox unavailable (no such user, or rejected)",
    551: "user not local",
    552: "mailbox full or message too large",
    553: "mailbox name not allowed",
    554: "transaction failed (rejected as spam or by policy)",
}


def classify_reply(code: int) -> ErrorClass:
    """5xx: the server refused for good; 4xx (and anything odd): worth another try later."""
    return ErrorClass.PERMANENT if 500 <= code < 600 else ErrorClass.TRANSIENT


def describe(code: int, server_text: str) -> str:
    meaning = SMTP_MEANINGS.get(code) or ("permanent failure" if 500 <= code < 600 else "temporary failure")
    detail = server_text.strip()
    return f"SMTP {code}: {meaning}" + (f" ({detail})" if detail else "")
