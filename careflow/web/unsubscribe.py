"""One-click unsubscribe (RFC 8058): the signed link in every care e-mail withdraws e-mail consent.

``GET`` shows a confirmation page and changes nothing, because mail scanners open links on
their own; ``POST`` (the mail client's one-click request, or the page's button) withdraws
consent for every purpose on the token's channel. Both are idempotent.
"""

from __future__ import annotations

from markupsafe import Markup, escape
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from careflow.config import CHANNEL_NAMES
from careflow.policies.consent import UNSUBSCRIBE_LINK, record_consent
from careflow.rendering.unsubscribe_links import BadToken, read_token, secret_key
from careflow.runtime import Runtime
from careflow.storage.models import Customer

_CHANNEL_WORDS = {"email": "e-mails", "sms": "text messages", "whatsapp": "WhatsApp messages"}


def _page(title: str, text: Markup | str, status: int = 200, form: bool = False) -> HTMLResponse:
    button = Markup('<form method="post"><button type="submit">Unsubscribe</button></form>') if form else ""
    html = Markup(
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><meta name="robots" content="noindex">'
        "<title>{title}</title></head>\n<body><h1>{title}</h1><p>{text}</p>{button}</body></html>\n"
    ).format(title=title, text=text, button=button)
    return HTMLResponse(str(html), status_code=status)


def unsubscribe_routes(runtime: Runtime) -> list[Route]:
    """``/unsubscribe/{token}``: GET asks, POST withdraws consent. Mount these in ``careflow serve``."""

    def verify(token: str) -> tuple[int, str] | HTMLResponse:
        secret = secret_key(runtime.settings)
        if secret is None:
            return _page("Not available", "Unsubscribe links are not enabled here.", status=404)
        try:
            customer_id, channel = read_token(secret, token)
        except BadToken:
            return _page("Invalid link", "This unsubscribe link is not valid. Copy the whole link.", 400)
        if channel not in CHANNEL_NAMES:
            return _page("Invalid link", "This unsubscribe link is not valid.", 400)
        return customer_id, channel

    def center_name(session: Session, customer_id: int) -> str | None:
        customer = session.get(Customer, customer_id)
        return customer.center.name if customer is not None else None

    def ask(customer_id: int, channel: str) -> HTMLResponse:
        with runtime.sessions() as session:
            name = center_name(session, customer_id) or "us"
        what = _CHANNEL_WORDS.get(channel, channel)
        return _page("Unsubscribe", escape(f"Stop receiving {what} from {name}?"), form=True)

    def withdraw(customer_id: int, channel: str) -> HTMLResponse:
        with runtime.sessions.begin() as session:
            customer = session.get(Customer, customer_id)
            name = customer.center.name if customer is not None else "us"
            if customer is not None:
                record_consent(
                    session, customer.id, channel, granted=False, source=UNSUBSCRIBE_LINK, actor="customer"
                )
        what = _CHANNEL_WORDS.get(channel, channel)
        return _page("Unsubscribed", escape(f"You will receive no more {what} from {name}."))

    async def unsubscribe(request: Request) -> HTMLResponse:
        checked = verify(str(request.path_params["token"]))
        if isinstance(checked, HTMLResponse):
            return checked
        customer_id, channel = checked
        if request.method == "POST":
            return await run_in_threadpool(withdraw, customer_id, channel)
        return await run_in_threadpool(ask, customer_id, channel)

    return [Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"], name="unsubscribe")]
