"""``careflow console``: serve the web console alone (``careflow serve`` mounts the same app)."""

from __future__ import annotations

import click

from careflow.cli.base import err, friendly_errors, opened_runtime


def register(main: click.Group) -> None:
    """Add this module's commands to the ``careflow`` group (see careflow.cli.app)."""
    main.add_command(console)


@click.command()
@click.option("--host", help="Address to listen on (default: [web] host, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default: [web] port, 8000).")
@click.option(
    "--dev",
    is_flag=True,
    help="Development mode: a throwaway secret key if none is set, and cookies over plain HTTP.",
)
@friendly_errors
def console(host: str | None, port: int | None, dev: bool) -> None:
    """Serve the console for service centers and marketers until stopped."""
    import uvicorn

    from careflow.web.console import console_app

    with opened_runtime() as runtime:
        if dev:
            runtime.settings.web.cookie_secure = False
        app = console_app(runtime, dev=dev)
        bind_host, bind_port = host or runtime.settings.web.host, port or runtime.settings.web.port
        err.print(f"careflow console on http://{bind_host}:{bind_port}/" + (" (dev mode)" if dev else ""))
        uvicorn.run(app, host=bind_host, port=bind_port, log_level="warning")
