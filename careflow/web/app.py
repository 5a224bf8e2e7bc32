"""The HTTP app ``careflow serve`` runs: webhooks, unsubscribe links, the console and metrics."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from careflow.runtime import Runtime
from careflow.web.unsubscribe import unsubscribe_routes
from careflow.web.webhooks import webhook_routes

CONSOLE_PATH = "/console"


async def _health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def _to_console(request: Request) -> Response:
    return RedirectResponse(CONSOLE_PATH + "/", status_code=302)


def create_app(
    runtime: Runtime, extra: Sequence[BaseRoute] = (), *, console: bool | None = None, dev: bool = False
) -> Starlette:
    """One app: Twilio webhooks, one-click unsubscribe, ``/console`` and ``/metrics``.

    The console is served when ``[web] secret_key`` is set or in ``dev`` mode (sessions then
    signed with a throwaway key), unless ``console=False``; ``extra`` routes are added as given.
    """
    if console is None:
        secret = runtime.settings.web.secret_key
        console = dev or bool(secret and secret.get_secret_value())
    from careflow.metrics import metrics_app
    from careflow.web.console import console_app

    routes: list[BaseRoute] = [
        Route("/healthz", _health),
        *webhook_routes(runtime),
        *unsubscribe_routes(runtime),
        Mount("/metrics", app=metrics_app()),
    ]
    if console:
        routes += [Route("/", _to_console), Mount(CONSOLE_PATH, app=console_app(runtime, dev=dev))]
    routes += list(extra)
    app = Starlette(routes=routes)
    app.state.runtime = runtime
    return app
