"""The console's Starlette application: page rendering, the sign-in guard, CSRF and center scoping."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from careflow.config import WebSettings
from careflow.errors import ConfigError
from careflow.runtime import Runtime
from careflow.storage.models import Center, utcnow
from careflow.web.body_limit import BodyTooLarge, capped, too_large
from careflow.web.console.i18n import LANG_COOKIE, pick_language, translate
from careflow.web.console.security import (
    SESSION_COOKIE,
    CurrentUser,
    Perm,
    load_session,
    tokens_match,
    unsign,
)

HERE = Path(__file__).parent
# A signed-in form (template texts included); the CSV upload has its own, larger limit.
FORM_BYTES = 5 * 1024 * 1024
CSRF_FAILED = (
    "The form was stale or did not come from this console (CSRF check failed). Reload the page and try again."
)
Clock = Callable[[], datetime]


class Forbidden(Exception):
    """The user may not see this page or record (another center's, or beyond the role)."""


class NotFound(Exception):
    pass


@dataclass
class Console:
    """What every request handler shares: the runtime, the signing key, the page templates."""

    runtime: Runtime
    secret_key: str
    clock: Clock = utcnow
    pages: Environment = field(init=False)

    def __post_init__(self) -> None:
        # Pages are autoescaped HTML, a different environment from the sandboxed message one.
        self.pages = Environment(
            loader=FileSystemLoader(str(HERE / "templates")),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    @property
    def web(self) -> WebSettings:
        return self.runtime.settings.web


def resolve_secret_key(runtime: Runtime, secret_key: str | None, dev: bool) -> str:
    """The cookie-signing key: given, configured, or (only in dev mode) a throwaway one."""
    if secret_key:
        return secret_key
    configured = runtime.settings.web.secret_key
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value()
    if dev:
        return secrets.token_urlsafe(32)
    raise ConfigError(
        "web.secret_key is not set: set CAREFLOW_WEB__SECRET_KEY (e.g. to the output of "
        "'python -c \"import secrets; print(secrets.token_urlsafe(32))\"'), or use --dev on a "
        "development machine (sessions then end when the process stops)"
    )


def root(request: Request) -> str:
    """Where the console is mounted (``/console`` inside ``careflow serve``, or ``""``)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def safe_next(value: str | None) -> str:
    """Only local paths: a sign-in link must never bounce the user to another site."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def language(request: Request) -> str:
    return pick_language(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))


def render_page(
    console: Console, request: Request, page: str, status: int = 200, **values: Any
) -> HTMLResponse:
    lang = language(request)
    html = console.pages.get_template(page).render(
        t=lambda text: translate(text, lang),
        lang=lang,
        url=lambda path: root(request) + path,
        request=request,
        **values,
    )
    return HTMLResponse(html, status_code=status)


@dataclass
class Ctx:
    """One request to a signed-in page: the user, the database session and the center in view."""

    console: Console
    request: Request
    db: Session
    user: CurrentUser
    form: FormData | None
    center: Center
    centers: list[Center]
    notices: list[str] = field(default_factory=list)

    @property
    def runtime(self) -> Runtime:
        return self.console.runtime

    def t(self, text: str) -> str:
        return translate(text, language(self.request))

    def param(self, name: str, default: str = "") -> str:
        if self.form is not None and name in self.form:
            value = self.form.get(name)
            return value if isinstance(value, str) else default
        return self.request.query_params.get(name, default)

    def url(self, path: str) -> str:
        return root(self.request) + path

    def center_url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return self.url(f"{path}{sep}center={quote(self.center.code)}")

    def redirect(self, path: str) -> RedirectResponse:
        return RedirectResponse(self.center_url(path), status_code=303)

    def render(self, page: str, status: int = 200, **values: Any) -> HTMLResponse:
        return render_page(
            self.console,
            self.request,
            page,
            status,
            user=self.user,
            center=self.center,
            centers=self.centers,
            csrf_token=self.user.csrf_token,
            center_url=self.center_url,
            notices=self.notices,
            Perm=Perm,
            **values,
        )

    def center_today(self) -> date:
        """The day it is in the center's time zone by the console's clock (not the server's date)."""
        return self.console.clock().astimezone(ZoneInfo(self.center.timezone)).date()

    def check_center(self, center_id: int) -> None:
        """URL guessing ends here: a record of another center is forbidden, not just hidden."""
        if center_id != self.center.id:
            raise Forbidden(f"record of center {center_id} is outside {self.center.code}")


def _choose_center(db: Session, user: CurrentUser, requested: str) -> tuple[Center, list[Center]]:
    centers = list(db.scalars(select(Center).order_by(Center.id)))
    if not user.can(Perm.ALL_CENTERS):
        own = [c for c in centers if c.id == user.center_id]
        if not own or (requested and requested != own[0].code):
            raise Forbidden(f"{user.email} may not open center {requested!r}")
        return own[0], own
    chosen = next((c for c in centers if c.code == requested), None) if requested else centers[0]
    if chosen is None:
        raise NotFound(f"no center {requested!r}")
    return chosen, centers


View = Callable[[Ctx], Response]


def guarded(
    perm: Perm | None, *, max_body: int = FORM_BYTES
) -> Callable[[View], Callable[[Request], Awaitable[Response]]]:
    """Sign-in, CSRF on every POST, the role's permission and the center, before ``view`` runs.

    A POST's body is read (at most ``max_body`` bytes) only under a session cookie this console
    signed: anyone else is sent to sign in without a byte of it read.
    """

    def decorate(view: View) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            console: Console = request.app.state.console
            form = None
            if request.method == "POST" and unsign(request.cookies.get(SESSION_COOKIE), console.secret_key):
                try:
                    form = await capped(request, max_body).form(max_part_size=FORM_BYTES)
                except BodyTooLarge as exc:
                    return too_large(exc)
            return await run_in_threadpool(_handle, console, request, form, perm, view)

        endpoint.__name__ = view.__name__
        return endpoint

    return decorate


def _handle(
    console: Console, request: Request, form: FormData | None, perm: Perm | None, view: View
) -> Response:
    with console.runtime.sessions() as db:
        user = load_session(
            db, request.cookies.get(SESSION_COOKIE), console.web, console.secret_key, console.clock()
        )
        db.commit()  # the sliding expiry, or the deletion of an expired session
        if user is None:
            return _to_sign_in(request)
        if form is not None:
            given = form.get("csrf_token") or request.headers.get("x-csrf-token")
            if not tokens_match(user.csrf_token, given if isinstance(given, str) else None):
                return render_page(
                    console,
                    request,
                    "error.html",
                    403,
                    title="Forbidden",
                    message=CSRF_FAILED,
                )
        try:
            if perm is not None and not user.can(perm):
                raise Forbidden(f"{user.role} lacks {perm}")
            requested = request.query_params.get("center", "")
            if form is not None and isinstance(form.get("center"), str):
                requested = str(form.get("center"))
            center, centers = _choose_center(db, user, requested)
            ctx = Ctx(console, request, db, user, form, center, centers)
            response = view(ctx)
            db.commit()
            return response
        except Forbidden:
            db.rollback()
            return render_page(
                console,
                request,
                "error.html",
                403,
                title="Forbidden",
                message="You do not have access to this page or record.",
                user=user,
            )
        except NotFound:
            db.rollback()
            return render_page(
                console, request, "error.html", 404, title="Not found", message="Not found", user=user
            )


def _to_sign_in(request: Request) -> Response:
    # request.url.path already includes the mount point, so "next" is a full local path.
    here = request.url.path + ("?" + request.url.query if request.url.query else "")
    target = root(request) + "/login?next=" + quote(here)
    if request.headers.get("hx-request"):
        return Response(status_code=401, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)
