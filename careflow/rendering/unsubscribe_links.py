"""Signed one-click unsubscribe links: only careflow can make one, and nobody can alter one."""

from __future__ import annotations

import base64
import hashlib
import hmac

from careflow.config import Settings

_DOMAIN = b"careflow-unsubscribe:v1:"  # a key used for other signatures can never forge these
_SIG_BYTES = 16  # 128 bits: forging by guessing is out of reach, and the link stays short


class BadToken(ValueError):
    """The token was not made by this careflow (altered, truncated or signed with another key)."""


def _signature(secret: str, payload: str) -> str:
    digest = hmac.new(secret.encode(), _DOMAIN + payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:_SIG_BYTES]).rstrip(b"=").decode()


def make_token(secret: str, customer_id: int, channel: str = "email") -> str:
    """``<customer>.<channel>.<signature>``: it names whose consent, and proves we issued it."""
    payload = f"{customer_id}.{channel}"
    return f"{payload}.{_signature(secret, payload)}"


def read_token(secret: str, token: str) -> tuple[int, str]:
    """The customer id and channel a token was issued for; ``BadToken`` if it is not genuine."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isdigit():
        raise BadToken("malformed unsubscribe token")
    payload = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(parts[2], _signature(secret, payload)):
        raise BadToken("unsubscribe token signature does not match")
    return int(parts[0]), parts[1]


def secret_key(settings: Settings) -> str | None:
    key = settings.web.secret_key
    return key.get_secret_value() or None if key is not None else None


def unsubscribe_url(settings: Settings, customer_id: int, channel: str = "email") -> str | None:
    """The link printed in the footer and sent in List-Unsubscribe; None without a key or public URL."""
    secret, base = secret_key(settings), settings.web.public_url
    if secret is None or not base:
        return None
    return f"{base.rstrip('/')}/unsubscribe/{make_token(secret, customer_id, channel)}"
