"""``careflow serve``: the HTTP app (Twilio webhooks) under uvicorn."""

from __future__ import annotations

import click

from careflow.cli import _friendly_errors, err, main, opened_runtime


@main.command()
@click.option("--host", help="Interface to listen on (default: [web] host).")
@click.option("--port", type=int, help="Port to listen on (default: [web] port).")
@_friendly_errors
def serve(host: str | None, port: int | None) -> None:
    """Run the webhook server for Twilio status callbacks and inbound messages (STOP, HELP, replies)."""
    import uvicorn

    from careflow.web.app import create_app

    with opened_runtime() as runtime:
        web = runtime.settings.web
        if runtime.settings.twilio.auth_token is None:
            err.print("[yellow]warning:[/] twilio.auth_token is not set: every webhook will be refused (403)")
        if not web.public_url:
            err.print(
                "[yellow]warning:[/] [web] public_url is not set: signatures are checked against the URL "
                "requests arrive at, which is wrong behind a proxy or tunnel"
            )
        # No access log: it is noise, and query strings could one day carry numbers.
        uvicorn.run(
            create_app(runtime),
            host=host or web.host,
            port=port or web.port,
            access_log=False,
            log_level="warning",
        )
