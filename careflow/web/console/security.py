"""Console accounts and sessions: argon2 password hashes, signed cookies, server-side expiry, CSRF."""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from careflow.config import WebSettings
from careflow.errors import CareflowError
from careflow.storage.models import Center, ConsoleSession, ConsoleUser, Role, SignInFailure

SESSION_COOKIE = "careflow_session"
LOGIN_COOKIE = "careflow_login"  # carries the sign-in form's CSRF token before there is a session
MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()
# Verifying against this keeps a wrong e-mail as slow as a wrong password (no account probing).
_DUMMY_HASH = _hasher.hash("careflow-no-such-user")


class Perm(enum.StrEnum):
    VIEW_REPORTS = "view_reports"  # dashboard, events, dry run
    RETRY_EVENTS = "retry_events"
    VIEW_CUSTOMERS = "view_customers"
    IMPORT_CUSTOMERS = "import_customers"
    EDIT_PLUGINS = "edit_plugins"
    EDIT_TEMPLATES = "edit_templates"
    EDIT_GLOBAL_TEMPLATES = "edit_global_templates"  # the defaults every center inherits
    RECORD_CONSENT = "record_consent"  # a customer's own re-consent or request to stop
    ALL_CENTERS = "all_centers"


ROLE_PERMISSIONS: dict[Role, frozenset[Perm]] = {
    Role.ADMIN: frozenset(Perm),
    Role.CENTER_MANAGER: frozenset(
        {
            Perm.VIEW_REPORTS,
            Perm.RETRY_EVENTS,
            Perm.VIEW_CUSTOMERS,
            Perm.IMPORT_CUSTOMERS,
            Perm.EDIT_PLUGINS,
            Perm.RECORD_CONSENT,
        }
    ),
    # Marketers see their center's customer cards (read only) to preview messages against them.
    Role.MARKETER: frozenset({Perm.VIEW_REPORTS, Perm.VIEW_CUSTOMERS, Perm.EDIT_TEMPLATES}),
}


@dataclass(frozen=True)
class CurrentUser:
    """The signed-in user as a request sees it."""

    id: int
    email: str
    role: Role
    center_id: int | None
    center_code: str | None
    csrf_token: str

    def can(self, perm: Perm) -> bool:
        return perm in ROLE_PERMISSIONS[self.role]


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise CareflowError(f"the password is too short: at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def canonical_email(email: str) -> str:
    """How e-mail addresses are stored and compared: trimmed, lower case."""
    return email.strip().lower()


def add_user(session: Session, email: str, password: str, role: Role, center: Center | None) -> ConsoleUser:
    """Create an account; managers and marketers must belong to a center, admins to none."""
    email = canonical_email(email)
    if "@" not in email:
        raise CareflowError(f"{email!r} is not an e-mail address")
    if role is Role.ADMIN and center is not None:
        raise CareflowError("an admin sees every center; leave out --center")
    if role is not Role.ADMIN and center is None:
        raise CareflowError(f"a {role} belongs to one center: give --center CODE")
    if session.scalar(select(ConsoleUser.id).where(ConsoleUser.email == email)) is not None:
        raise CareflowError(f"a user {email} already exists")
    user = ConsoleUser(
        email=email,
        password_hash=hash_password(password),
        role=str(role),
        center_id=center.id if center else None,
        active=True,
    )
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, email: str, password: str) -> ConsoleUser | None:
    user = session.scalar(select(ConsoleUser).where(ConsoleUser.email == canonical_email(email)))
    if user is None or not user.active:
        verify_password(_DUMMY_HASH, password)
        return None
    return user if verify_password(user.password_hash, password) else None


def sign(value: str, key: str) -> str:
    mac = hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()
    return f"{value}.{mac}"


def unsign(signed: str | None, key: str) -> str | None:
    """The value if the signature is ours, else None (a forged or tampered cookie)."""
    if not signed or "." not in signed:
        return None
    value, mac = signed.rsplit(".", 1)
    expected = hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()
    return value if hmac.compare_digest(mac, expected) else None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _expiry(created: datetime, now: datetime, web: WebSettings) -> datetime:
    return min(
        created + timedelta(hours=web.session_max_hours), now + timedelta(minutes=web.session_idle_minutes)
    )


def start_session(session: Session, user: ConsoleUser, web: WebSettings, key: str, now: datetime) -> str:
    """Record a new session and return the signed cookie value (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(
            token_hash=_token_hash(token),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=_expiry(now, now, web),
        )
    )
    return sign(token, key)


def load_session(
    session: Session, cookie: str | None, web: WebSettings, key: str, now: datetime
) -> CurrentUser | None:
    """The user behind a cookie, if the session exists, has not expired and the account is active."""
    token = unsign(cookie, key)
    if token is None:
        return None
    row = session.scalar(select(ConsoleSession).where(ConsoleSession.token_hash == _token_hash(token)))
    if row is None:
        return None
    if now >= row.expires_at:
        session.delete(row)
        return None
    user = session.get(ConsoleUser, row.user_id)
    if user is None or not user.active:
        return None
    # Sliding idle expiry, bounded by the absolute lifetime; written at most once a minute.
    if now - row.last_seen_at > timedelta(minutes=1):
        row.last_seen_at = now
        row.expires_at = _expiry(row.created_at, now, web)
    return CurrentUser(
        id=user.id,
        email=user.email,
        role=Role(user.role),
        center_id=user.center_id,
        center_code=user.center.code if user.center else None,
        csrf_token=row.csrf_token,
    )


def end_session(session: Session, cookie: str | None, key: str) -> None:
    token = unsign(cookie, key)
    if token is not None:
        session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == _token_hash(token)))


def purge_expired(session: Session, now: datetime) -> int:
    result = session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    return int(getattr(result, "rowcount", 0))


def tokens_match(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


# Sign-in throttling: failures are counted per e-mail (guessing one account's password) and per
# client address (trying many accounts); past the limit, sign-in is refused for the window
# without checking the password at all, so a locked-out guesser learns nothing.
FAILURES_PER_EMAIL = 5
FAILURES_PER_ADDRESS = 20
FAILURE_WINDOW = timedelta(minutes=15)


def sign_in_locked(session: Session, email: str, address: str, now: datetime) -> timedelta | None:
    """How long sign-in stays refused for this e-mail or client address, or None if it is allowed."""
    since = now - FAILURE_WINDOW
    waits = []
    for column, value, limit in (
        (SignInFailure.email, canonical_email(email), FAILURES_PER_EMAIL),
        (SignInFailure.address, address, FAILURES_PER_ADDRESS),
    ):
        recent = list(
            session.scalars(
                select(SignInFailure.at)
                .where(column == value, SignInFailure.at >= since)
                .order_by(SignInFailure.at.desc())
                .limit(limit)
            )
        )
        if len(recent) >= limit:
            waits.append(recent[-1] + FAILURE_WINDOW - now)  # when the oldest counted one expires
    return max(waits) if waits else None


def record_sign_in_failure(session: Session, email: str, address: str, now: datetime) -> None:
    session.execute(delete(SignInFailure).where(SignInFailure.at < now - FAILURE_WINDOW))
    session.add(SignInFailure(email=canonical_email(email)[:320], address=address[:64], at=now))


def forget_sign_in_failures(session: Session, email: str) -> None:
    """A successful sign-in clears its e-mail's failures (not its address's)."""
    session.execute(delete(SignInFailure).where(SignInFailure.email == canonical_email(email)))
