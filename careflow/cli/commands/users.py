"""``careflow users``: console accounts (the password never appears on the command line)."""

from __future__ import annotations

import os
import sys

import click
from rich.table import Table
from sqlalchemy import select

from careflow.cli.base import friendly_errors, opened_runtime, out
from careflow.errors import CareflowError
from careflow.storage.models import Center, ConsoleUser, Role


def register(main: click.Group) -> None:
    """Add this module's commands to the ``careflow`` group (see careflow.cli.app)."""
    main.add_command(users)


PASSWORD_ENV = "CAREFLOW_USER_PASSWORD"


@click.group()
def users() -> None:
    """Console users: admins, center managers and marketers."""


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@users.command(name="add")
@click.argument("email")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--center", "center_code", help="The center a manager or marketer belongs to.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help=f"Read the password from standard input (else ${PASSWORD_ENV}, else a prompt).",
)
@friendly_errors
def users_add(email: str, role: str, center_code: str | None, password_stdin: bool) -> None:
    """Create a console account for EMAIL."""
    from careflow.web.console.security import add_user

    password = _read_password(password_stdin)
    with opened_runtime() as runtime, runtime.sessions() as session:
        center = None
        if center_code:
            center = session.scalar(select(Center).where(Center.code == center_code))
            if center is None:
                known = ", ".join(runtime.settings.centers)
                raise CareflowError(f"unknown center {center_code!r}; configured centers: {known}")
        user = add_user(session, email, password, Role(role), center)
        session.commit()
        out.print(f"added {user.email} as {user.role}" + (f" of center {center_code}" if center_code else ""))


@users.command(name="list")
@friendly_errors
def users_list() -> None:
    """List console accounts."""
    with opened_runtime() as runtime, runtime.sessions() as session:
        table = Table(title="console users")
        for col in ("email", "role", "center", "active"):
            table.add_column(col)
        for user in session.scalars(select(ConsoleUser).order_by(ConsoleUser.email)):
            table.add_row(
                user.email,
                user.role,
                user.center.code if user.center else "-",
                "yes" if user.active else "no",
            )
        out.print(table)


@users.command(name="disable")
@click.argument("email")
@friendly_errors
def users_disable(email: str) -> None:
    """Disable an account; its sessions stop working at the next request."""
    from careflow.web.console.security import canonical_email

    with opened_runtime() as runtime, runtime.sessions() as session:
        user = session.scalar(select(ConsoleUser).where(ConsoleUser.email == canonical_email(email)))
        if user is None:
            raise CareflowError(f"no user {email}")
        user.active = False
        session.commit()
        out.print(f"disabled {user.email}")
