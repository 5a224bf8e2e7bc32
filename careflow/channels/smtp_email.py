"""E-mail over SMTP (STARTTLS, implicit TLS or plain), one connection per message, per-center From."""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, localtime

from careflow.channels.base import Channel, OutgoingMessage, SendResult
from careflow.channels.smtp_errors import classify_reply, describe
from careflow.channels.twilio_errors import ErrorClass
from careflow.config import EmailSettings, Settings
from careflow.errors import SendError
from careflow.hookspecs import hookimpl

# CRLF line ends, and non-ASCII bodies encoded (quoted-printable/base64) rather than sent as
# 8-bit, so any relay accepts them whether or not it offers 8BITMIME.
_POLICY = SMTP_POLICY.clone(cte_type="7bit")


class SmtpChannel:
    """Builds a multipart (text + HTML) message with List-Unsubscribe and hands it to the relay."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._email: EmailSettings = settings.email

    def sender(self, center_code: str) -> Address:
        """The center's own From (display name = center name), else the global ``email.from_address``."""
        center = self._settings.centers.get(center_code)
        addr = (center.email_from if center else None) or self._email.from_address
        if not addr:
            raise SendError(
                f"no e-mail sender for center {center_code!r}: set centers.{center_code}.email_from",
                code="config",
                permanent=True,
            )
        name = center.name if center else ""
        return Address(display_name=name, addr_spec=addr)

    def compose(self, message: OutgoingMessage) -> EmailMessage:
        sender = self.sender(message.center_code)
        msg = EmailMessage(policy=_POLICY)
        msg["From"] = sender
        msg["To"] = message.to
        # Subjects are single-line; a template's stray newline must not become a header break.
        msg["Subject"] = " ".join((message.subject or "").split())
        msg["Date"] = format_datetime(localtime())
        # Stable per event: if an unclear attempt is retried, receivers can tell it is the same mail.
        msg["Message-ID"] = f"<{_message_id(message)}@{sender.domain}>"
        if message.unsubscribe_url:
            msg["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
            # RFC 8058: mail clients POST this body to the link; no page, no second click.
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg.set_content(message.body, subtype="plain", charset="utf-8")
        if message.html_body:
            msg.add_alternative(message.html_body, subtype="html", charset="utf-8")
        if message.locale:  # after the parts: set_content drops Content-* headers set before it
            msg["Content-Language"] = message.locale.replace("_", "-")
        return msg

    def _connect(self) -> smtplib.SMTP:
        cfg = self._email
        context = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
        smtp: smtplib.SMTP
        if cfg.security == "tls":
            smtp = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout_seconds, context=context)
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_seconds)
        try:
            smtp.ehlo()
            if cfg.security == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
            if cfg.username:
                password = cfg.password.get_secret_value() if cfg.password else ""
                smtp.login(cfg.username, password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, message: OutgoingMessage) -> SendResult:
        msg = self.compose(message)
        sender = self.sender(message.center_code).addr_spec
        data_started = False
        try:
            smtp = self._connect()
            try:
                # MAIL, RCPT and DATA one by one, so we know whether the server may have the mail.
                code, reply = smtp.mail(sender)
                if code != 250:
                    raise smtplib.SMTPSenderRefused(code, reply, sender)
                code, reply = smtp.rcpt(message.to)
                if code not in (250, 251):
                    raise smtplib.SMTPRecipientsRefused({message.to: (code, reply)})
                data_started = True
                smtp.data(msg.as_bytes())
            finally:
                _quit_quietly(smtp)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            raise _reply_error(code, reply) from None
        except smtplib.SMTPResponseException as exc:  # sender refused, data refused, login failed, ...
            raise _reply_error(exc.smtp_code, exc.smtp_error) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise SendError(
                f"SMTP server does not support what [email] asks for: {exc}",
                code="smtp-config",
                permanent=True,
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            # Refused or dropped connections, timeouts, TLS failures. Once DATA began the server
            # may have queued the mail: say so, so the retry is flagged (SMTP cannot be asked).
            where = f"{self._email.host}:{self._email.port}"
            raise SendError(
                f"SMTP connection to {where} failed: {type(exc).__name__}: {exc}",
                code="smtp-connection",
                permanent=False,
                ambiguous=data_started,
            ) from None
        return SendResult(provider_message_id=_message_id(message))

    def lookup(self, message: OutgoingMessage, since: datetime) -> SendResult | None:
        return None  # SMTP cannot be asked whether a relay queued a message


def _message_id(message: OutgoingMessage) -> str:
    """``careflow.<event>.<hash>``: fits provider_message_id and differs across installations."""
    digest = hashlib.sha256(f"{message.event_id}:{message.to}:{message.center_code}".encode()).hexdigest()
    return f"careflow.{message.event_id}.{digest[:16]}"


def _reply_error(code: int, reply: bytes | str) -> SendError:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return SendError(
        describe(code, text),
        code=f"smtp-{code}",
        permanent=classify_reply(code) is ErrorClass.PERMANENT,
    )


def _quit_quietly(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


class SmtpProvider:
    name = "smtp"
    channels = frozenset({"email"})

    def create(self, settings: Settings, channel: str) -> Channel:
        return SmtpChannel(settings)


@hookimpl(trylast=True)
def careflow_channel_providers() -> list[SmtpProvider]:
    return [SmtpProvider()]
