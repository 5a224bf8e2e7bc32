"""A dry run's would-be messages, rendered by delivery's own renderer, and a bounded sample of them.

A dry run writes nothing, so its messages exist only as planning rows. They are rendered
here exactly as a worker would render them (the lint refusal first, then
``careflow.rendering.event.render_event_parts``), batch by batch as planning finds them: a dry run
over a million customers holds one batch, or the few messages per plugin it will show.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from careflow.errors import TemplateError
from careflow.policies.rows import PlannedRow
from careflow.rendering.event import render_event_parts
from careflow.rendering.lint import lint_refusal
from careflow.runtime import Runtime
from careflow.storage.models import CareEvent, Customer

_CHUNK = 1_000


@dataclass(frozen=True)
class WouldBe:
    """One message a dry run would record: to whom, on which channel, its text, and its fate."""

    key: str
    plugin: str
    customer: str
    name: str
    due_date: str
    channel: str | None
    to: str | None
    channel_reason: str | None
    subject: str | None
    body: str | None
    status: str
    reason: str | None

    def as_json(self) -> dict[str, Any]:
        """The documented ``careflow run --dry-run --json`` line."""
        return {
            "key": self.key,
            "plugin": self.plugin,
            "customer": self.customer,
            "name": self.name,
            "due_date": self.due_date,
            "channel": self.channel,
            "to": self.to,
            "channel_reason": self.channel_reason,
            "subject": self.subject,
            "body": self.body,
            "status": f"would be {self.status}",
            "reason": self.reason,
        }


def render_rows(runtime: Runtime, rows: Sequence[PlannedRow]) -> Iterator[WouldBe]:
    """Each planning row as the message it would be; a template that fails shows as ``failed``."""
    with runtime.sessions() as session:
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            customers = {
                c.id: c
                for c in session.scalars(
                    select(Customer)
                    .where(Customer.id.in_({row.customer_id for row in chunk}))
                    .options(selectinload(Customer.center))
                )
            }
            for row in chunk:
                yield _would_be(runtime, row, customers[row.customer_id])


def _would_be(runtime: Runtime, row: PlannedRow, customer: Customer) -> WouldBe:
    event = CareEvent(**row.as_columns())
    status, reason = str(row.status), row.status_reason
    subject = body = None
    if event.channel:
        refusal = lint_refusal(runtime, event, customer.center)
        if refusal is not None:  # delivery never uses a template that fails lint
            status, reason = "failed", refusal
        else:
            try:
                rendered = render_event_parts(runtime, event, customer, customer.center)
                body, subject = rendered.body, rendered.subject if event.channel == "email" else None
            except TemplateError as exc:
                status, reason = "failed", str(exc)
    return WouldBe(
        key=row.idempotency_key,
        plugin=row.plugin,
        customer=customer.external_id,
        name=customer.name,
        due_date=row.due_date.isoformat(),
        channel=row.channel,
        to=row.recipient,
        channel_reason=row.channel_reason,
        subject=subject,
        body=body,
        status=status,
        reason=reason,
    )


@dataclass
class FirstPerPlugin:
    """Keeps the first ``limit`` rows of each plugin (all with ``limit`` None) and counts the rest."""

    limit: int | None
    kept: list[PlannedRow] = field(default_factory=list)
    left_out: Counter[str] = field(default_factory=Counter)
    _seen: Counter[str] = field(default_factory=Counter)

    def __call__(self, rows: list[PlannedRow]) -> None:
        for row in rows:
            plugin = row.plugin
            self._seen[plugin] += 1
            if self.limit is None or self._seen[plugin] <= self.limit:
                self.kept.append(row)
            else:
                self.left_out[plugin] += 1


def print_messages(console: Console, messages: Iterator[WouldBe]) -> None:
    """Each would-be message: plugin, customer, channel and fate on one line, its text indented."""
    for message in messages:
        where = f"{message.channel} {message.to}" if message.channel else "no channel"
        fate = f"would be {message.status}"
        if message.reason:
            fate += f": {message.reason}"
        console.print(
            f"[bold]{escape(message.plugin)}[/] → {escape(message.name)} ({escape(message.customer)}) "
            f"via {escape(where)}: {escape(fate)}",
            highlight=False,
        )
        if message.subject:
            console.print(f"  subject: {message.subject}", highlight=False, markup=False)
        if message.body:
            console.print("  " + message.body.rstrip().replace("\n", "\n  "), highlight=False, markup=False)
