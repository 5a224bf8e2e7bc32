"""The web console for service centers and marketers, as a self-contained Starlette application.

``console_app(runtime)`` returns the app; mount it anywhere (``Mount("/console", app=...)``
inside ``careflow serve``) — links, redirects and cookies follow the mount point. It needs
no middleware from its host: sign-in, CSRF and center scoping happen per route.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from careflow.runtime import Runtime
from careflow.storage.models import utcnow
from careflow.web.console import views_auth, views_ops, views_templates
from careflow.web.console.app import HERE, Clock, Console, resolve_secret_key


def console_routes() -> list[BaseRoute]:
    return [
        Route("/", views_ops.dashboard),
        Route("/login", views_auth.login, methods=["GET", "POST"]),
        Route("/logout", views_auth.logout, methods=["POST"]),
        Route("/lang/{code}", views_auth.switch_language),
        Route("/templates", views_templates.template_list),
        Route("/templates/edit", views_templates.template_edit),
        Route("/templates/preview", views_templates.template_preview, methods=["POST"]),
        Route("/templates/save", views_templates.template_save, methods=["POST"]),
        Route("/templates/rollback", views_templates.template_rollback, methods=["POST"]),
        Route("/plugins", views_ops.plugin_list),
        Route("/plugins/{name}/toggle", views_ops.plugin_toggle, methods=["POST"]),
        Route("/plugins/{name}", views_ops.plugin_settings, methods=["GET", "POST"]),
        Route("/customers", views_ops.customer_list),
        Route("/customers/import", views_ops.customer_import, methods=["GET", "POST"]),
        Route("/customers/{customer_id}", views_ops.customer_card),
        Route("/customers/{customer_id}/consent", views_ops.customer_consent, methods=["POST"]),
        Route("/events", views_ops.event_list),
        Route("/events/retry", views_ops.event_retry, methods=["POST"]),
        Route("/dry-run", views_ops.dry_run),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]


def console_app(
    runtime: Runtime, *, secret_key: str | None = None, dev: bool = False, clock: Clock = utcnow
) -> Starlette:
    """The console over ``runtime``; refuses to start without a secret key unless ``dev``."""
    app = Starlette(routes=console_routes())
    app.state.console = Console(runtime, resolve_secret_key(runtime, secret_key, dev), clock)
    return app


__all__ = ["console_app", "console_routes"]
