"""The HTTP app: a plain list of routes and mounts, so the web console can be added beside the webhooks."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Route

from careflow.runtime import Runtime
from careflow.web.webhooks import webhook_routes


async def _health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def create_app(runtime: Runtime, extra: Sequence[BaseRoute] = ()) -> Starlette:
    """The app ``careflow serve`` runs; ``extra`` routes or mounts (e.g. the console) are added as given."""
    routes: list[BaseRoute] = [Route("/healthz", _health), *webhook_routes(runtime), *extra]
    app = Starlette(routes=routes)
    app.state.runtime = runtime
    return app
