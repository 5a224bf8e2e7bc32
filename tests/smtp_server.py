"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, for the e-mail channel's tests."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Received:
    """One accepted message: the envelope and the parsed message."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    authenticated_as: str | None


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    rejections: dict[str, str] = field(default_factory=dict)  # recipient -> SMTP reply
    data_reply: str | None = None  # answer DATA with this instead of 250
    drop_after_data: bool = False  # hang up once the message is in, before answering
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self.lock:
            reply = self.rejections.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            if self.data_reply:
                return self.data_reply
            drop = self.drop_after_data
        if drop:
            assert server.transport is not None
            server.transport.close()
            return "250 never heard"
        raw = envelope.original_content or envelope.content or b""
        assert isinstance(raw, bytes)
        parsed = message_from_bytes(raw, policy=default)
        assert isinstance(parsed, EmailMessage)
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        with self.lock:
            self.received.append(
                Received(
                    mail_from=str(envelope.mail_from),
                    rcpt_tos=list(envelope.rcpt_tos),
                    message=parsed,
                    authenticated_as=login.decode() if login else None,
                )
            )
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made with the openssl command line; (cert, key)."""
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
    command += " -addext subjectAltName=IP:127.0.0.1"
    subprocess.run(
        [*command.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


class LocalSmtpServer:
    """``with LocalSmtpServer() as smtp:``; point ``[email] host/port`` at ``smtp.port``."""

    def __init__(
        self,
        *,
        starttls: tuple[Path, Path] | None = None,
        implicit_tls: tuple[Path, Path] | None = None,
        users: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.handler = _Handler()
        self.port = port or free_port()
        self.running = False
        self.users = users or {}
        kwargs: dict[str, Any] = {}
        if starttls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(*map(str, starttls))
            kwargs.update(tls_context=ctx, require_starttls=True)
        if implicit_tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(*map(str, implicit_tls))
            kwargs.update(ssl_context=ctx)
        if users:
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=True,
                # aiosmtpd only counts STARTTLS as TLS; an implicit-TLS connection is TLS already.
                auth_require_tls=bool(starttls),
            )
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **kwargs)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user, password = auth_data.login.decode(), auth_data.password.decode()
            if self.users.get(user) == password:
                return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def reject(self, recipient: str, reply: str) -> None:
        """Answer RCPT TO for ``recipient`` with ``reply`` (e.g. "550 5.1.1 mailbox unavailable")."""
        with self.handler.lock:
            self.handler.rejections[recipient] = reply

    def reject_data(self, reply: str | None) -> None:
        with self.handler.lock:
            self.handler.data_reply = reply

    def stop(self) -> None:
        """Stop listening (an aiosmtpd controller cannot be started again: make a new server)."""
        if self.running:
            self.controller.stop()
            self.running = False

    def drop_after_data(self, drop: bool = True) -> None:
        """Close the connection after receiving DATA, so the client cannot know the outcome."""
        with self.handler.lock:
            self.handler.drop_after_data = drop

    def __enter__(self) -> LocalSmtpServer:
        self.controller.start()
        self.running = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
