"""Signing in and out, and the language switch."""

from __future__ import annotations

import math
import secrets
from datetime import timedelta

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from careflow.web.body_limit import SMALL_FORM_BYTES, BodyTooLarge, capped, too_large
from careflow.web.console.app import CSRF_FAILED, Console, Ctx, guarded, render_page, root, safe_next
from careflow.web.console.i18n import LANG_COOKIE, LANGUAGES
from careflow.web.console.security import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    authenticate,
    end_session,
    forget_sign_in_failures,
    purge_expired,
    record_sign_in_failure,
    sign,
    sign_in_locked,
    start_session,
    tokens_match,
    unsign,
)

LOCKED_OUT = "Too many failed sign-ins; please try again in 15 minutes."


def _set_cookie(
    response: Response, console: Console, request: Request, name: str, value: str, max_age: int
) -> None:
    """HttpOnly, SameSite=Lax, Secure unless [web] cookie_secure is off (plain-HTTP development)."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=console.web.cookie_secure,
        path=(root(request) or "") + "/",
    )


async def login(request: Request) -> Response:
    console: Console = request.app.state.console
    next_url = (
        safe_next(request.query_params.get("next"))
        if request.query_params.get("next")
        else root(request) + "/"
    )
    token = unsign(request.cookies.get(LOGIN_COOKIE), console.secret_key)
    if request.method == "GET" or token is None:
        token = token or secrets.token_urlsafe(24)
        response = render_page(
            console,
            request,
            "login.html",
            200 if request.method == "GET" else 400,
            csrf_token=token,
            next_url=next_url,
            error=None if request.method == "GET" else "Your session has expired; please sign in again.",
        )
        _set_cookie(response, console, request, LOGIN_COOKIE, sign(token, console.secret_key), 3600)
        return response
    try:
        form = await capped(request, SMALL_FORM_BYTES).form()
    except BodyTooLarge as exc:
        return too_large(exc)
    if not tokens_match(token, str(form.get("csrf_token") or "")):
        return render_page(
            console,
            request,
            "error.html",
            403,
            title="Forbidden",
            message=CSRF_FAILED,
        )
    email, password = str(form.get("email") or ""), str(form.get("password") or "")
    next_url = safe_next(str(form.get("next") or "")) if form.get("next") else root(request) + "/"

    address = request.client.host if request.client else "unknown"

    def check() -> str | timedelta | None:
        """The new session's cookie; how long sign-in stays locked; or None (wrong credentials)."""
        now = console.clock()
        with console.runtime.sessions() as db:
            locked = sign_in_locked(db, email, address, now)
            if locked is not None:
                return locked
            user = authenticate(db, email, password)
            if user is None:
                record_sign_in_failure(db, email, address, now)
                db.commit()
                return None
            forget_sign_in_failures(db, email)
            purge_expired(db, now)  # sign-ins are rare enough to tidy up here
            cookie = start_session(db, user, console.web, console.secret_key, now)
            db.commit()
            return cookie

    cookie = await run_in_threadpool(check)
    if isinstance(cookie, timedelta):
        locked_out = render_page(
            console,
            request,
            "login.html",
            429,
            csrf_token=token,
            next_url=next_url,
            error=LOCKED_OUT,
            email=email,
        )
        locked_out.headers["Retry-After"] = str(max(1, math.ceil(cookie.total_seconds())))
        return locked_out
    if cookie is None:
        return render_page(
            console,
            request,
            "login.html",
            401,
            csrf_token=token,
            next_url=next_url,
            error="Wrong e-mail or password.",
            email=email,
        )
    signed_in = RedirectResponse(next_url, status_code=303)
    _set_cookie(signed_in, console, request, SESSION_COOKIE, cookie, console.web.session_max_hours * 3600)
    signed_in.delete_cookie(LOGIN_COOKIE, path=(root(request) or "") + "/")
    return signed_in


@guarded(None)
def logout(ctx: Ctx) -> Response:
    end_session(ctx.db, ctx.request.cookies.get(SESSION_COOKIE), ctx.console.secret_key)
    response = RedirectResponse(ctx.url("/login"), status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=(root(ctx.request) or "") + "/")
    return response


async def switch_language(request: Request) -> Response:
    code = request.path_params["code"]
    target = (
        safe_next(request.query_params.get("next"))
        if request.query_params.get("next")
        else root(request) + "/"
    )
    response = RedirectResponse(target, status_code=303)
    if code in LANGUAGES:
        response.set_cookie(
            LANG_COOKIE, code, max_age=365 * 86400, samesite="lax", path=(root(request) or "") + "/"
        )
    return response
