"""What every command shares: output consoles, friendly errors, the runtime, instants and look-ups.

Imports no command, so every command module can import it.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from rich.markup import escape
from sqlalchemy import select

from careflow.cli.terminal import OutputConsole
from careflow.config import Settings, load_settings
from careflow.errors import CareflowError
from careflow.runtime import Runtime
from careflow.storage.models import Center, Customer, utcnow

# soft_wrap: a problem line stays one line when output goes to a file or a pipe; tables there
# keep their full width too (careflow.cli.terminal).
out = OutputConsole(soft_wrap=True)
err = OutputConsole(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """careflow's own errors are printed as a clear message and exit status 1, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CareflowError as exc:
            # escape(): messages name config sections like [plugins.x], which are not markup.
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


@contextmanager
def opened_runtime(*, migrate_schema: bool = False, long_running: bool = False) -> Iterator[Runtime]:
    """The runtime of one command; ``long_running`` commands also settle the heap (careflow.heap)."""
    runtime = Runtime.build(load_settings(), migrate_schema=migrate_schema)
    if long_running:
        from careflow.heap import settle_after_startup

        settle_after_startup()
    for failure in runtime.registry.failures:  # e.g. a plugin made for another careflow version
        err.print(f"[yellow]warning: plugin {failure.name} is not used:[/] {failure.error}", highlight=False)
    try:
        yield runtime
    finally:
        runtime.close()


def parse_now(value: str | None) -> datetime:
    """``--now``: an ISO-8601 instant (naive means UTC), or the current instant when not given."""
    if value is None:
        return utcnow()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not ISO-8601, e.g. 2026-03-01T09:00:00+08:00") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def center_named(session: Any, settings: Settings, code: str | None) -> Center:
    """The center with ``code`` (default: the first configured), or an error listing the configured ones."""
    code = code or settings.default_center
    center = session.scalar(select(Center).where(Center.code == code))
    if center is None:
        known = ", ".join(settings.centers)
        raise CareflowError(f"unknown center {code!r}; configured centers: {known}")
    return center  # type: ignore[no-any-return]


def customer_by_external_id(session: Any, center: Center, external_id: str) -> Customer:
    """The card with ``external_id`` in ``center``, or an error that names both."""
    customer = session.scalar(
        select(Customer).where(Customer.center_id == center.id, Customer.external_id == external_id)
    )
    if customer is None:
        raise CareflowError(f"no customer {external_id!r} in center {center.code}")
    return customer  # type: ignore[no-any-return]
