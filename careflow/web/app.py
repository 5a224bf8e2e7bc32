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
    runtime: Runtime, extra: Sequence[BaseRoute] = (), *, console: bool = True, dev: bool = False
) -> Starlette:
    """One app: Twilio webhooks, one-click unsubscribe, ``/console`` and ``/metrics``.

    The console needs ``[web] secret_key`` (or ``dev``, which signs sessions with a throwaway
    key); ``extra`` routes or mounts are added as given.
    """
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
