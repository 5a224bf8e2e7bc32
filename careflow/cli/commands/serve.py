"""``careflow serve``: the HTTP app (Twilio webhooks) under uvicorn."""

from __future__ import annotations

import click

from careflow.cli.base import err, friendly_errors, opened_runtime


def register(main: click.Group) -> None:
    """Add this module's commands to the ``careflow`` group (see careflow.cli.app)."""
    main.add_command(serve)


@click.command()
@click.option("--host", help="Interface to listen on (default: [web] host).")
@click.option("--port", type=int, help="Port to listen on (default: [web] port).")
@click.option("--dev", is_flag=True, help="Serve the console without [web] secret_key (throwaway sessions).")
@friendly_errors
def serve(host: str | None, port: int | None, dev: bool) -> None:
    """Run the HTTP app: Twilio webhooks, unsubscribe links, the web console (/console) and /metrics."""
    import uvicorn

    from careflow.web.app import create_app

    with opened_runtime(long_running=True) as runtime:
        web = runtime.settings.web
        if runtime.settings.twilio.auth_token is None:
            err.print("[yellow]warning:[/] twilio.auth_token is not set: every webhook will be refused (403)")
        if not web.public_url:
            err.print(
                "[yellow]warning:[/] [web] public_url is not set: signatures are checked against the URL "
                "requests arrive at, which is wrong behind a proxy or tunnel"
            )
        console = dev or bool(web.secret_key and web.secret_key.get_secret_value())
        if not console:
            err.print(
                "[yellow]warning:[/] [web] secret_key is not set: the console is off "
                "(set CAREFLOW_WEB__SECRET_KEY, or --dev on a development machine)"
            )
        # No access log: it is noise, and query strings could one day carry numbers.
        uvicorn.run(
            create_app(runtime, console=console, dev=dev),
            host=host or web.host,
            port=port or web.port,
            access_log=False,
            log_level="warning",
        )
