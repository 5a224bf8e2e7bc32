"""Render an unsaved template exactly as a send would (careflow.rendering.event), one name swapped."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from careflow.care import CarePlugin, Purpose
from careflow.errors import TemplateError
from careflow.rendering.database import template_name
from careflow.rendering.event import render_event
from careflow.rendering.lint import lint_context
from careflow.rendering.sms_segments import Segments, count_segments
from careflow.rendering.store import OPT_OUT_FOOTERS
from careflow.runtime import Runtime
from careflow.storage.models import CareEvent, Center, Customer

SMS_CHANNELS = ("sms", "whatsapp")


@dataclass(frozen=True)
class Draft:
    """A template text being edited, and the key it will be saved under."""

    scope: str  # "" for the global default, else a center code
    template: str
    channel: str
    locale: str
    source: str

    @property
    def name(self) -> str:
        return template_name(self.scope, self.template, self.channel, self.locale)


@dataclass(frozen=True)
class Preview:
    body: str | None
    subject: str | None
    error: str | None
    segments: Segments | None
    footer: str | None  # the opt-out footer careflow appended, if it did
    recipient: str  # whom the preview was rendered for
    due_date: date  # the day the previewed occasion falls on


def sample_customer(center: Center) -> Customer:
    """A customer card that exists only for previews (never added to a session)."""
    return Customer(
        id=0,
        center_id=center.id,
        external_id="SAMPLE-1",
        name="王小明" if center.locale.startswith("zh") else "Alex Sample",
        city="Shanghai",
        birth_year=1990,
        birth_month=5,
        birth_day=11,
        locale=None,
    )


def _recorded_event(session: Session, customer: Customer, plugin: str, today: date) -> CareEvent | None:
    """The customer's event of ``plugin`` to preview: the next one due (from ``today``), else the latest."""
    mine = select(CareEvent).where(CareEvent.customer_id == customer.id, CareEvent.plugin == plugin)
    upcoming = session.scalar(
        mine.where(CareEvent.due_date >= today).order_by(CareEvent.due_date, CareEvent.id).limit(1)
    )
    if upcoming is not None:
        return upcoming
    return session.scalar(mine.order_by(CareEvent.due_date.desc(), CareEvent.id.desc()).limit(1))


def runtime_with_draft(runtime: Runtime, draft: Draft) -> Runtime:
    """The same runtime, whose template store sees ``draft`` in place of its saved version."""
    return dataclasses.replace(runtime, templates=runtime.templates.with_sources({draft.name: draft.source}))


def footer_for(body: str, channel: str, purpose: str, locale: str) -> str | None:
    if purpose != Purpose.MARKETING or channel not in SMS_CHANNELS:
        return None
    footer = OPT_OUT_FOOTERS.get(locale) or OPT_OUT_FOOTERS.get(locale.split("_")[0]) or OPT_OUT_FOOTERS["en"]
    return footer if body.endswith(footer) else None


def preview_draft(
    runtime: Runtime,
    session: Session,
    draft: Draft,
    center: Center,
    plugin: CarePlugin | None,
    *,
    today: date,
    customer: Customer | None = None,
) -> Preview:
    """What ``customer`` (or a sample customer) would receive if ``draft`` were published now.

    Dates are the occasion's: a real customer's recorded event (the next one due, else the
    latest) gives its due date and context; otherwise the plugin's sample values fall on
    ``today``, the day being planned in the center's time zone, never the server's clock.
    """
    purpose = str(plugin.purpose) if plugin else str(Purpose.MARKETING)
    context, _ = lint_context(runtime, draft.name).occasion_samples()
    occasion, due_date = draft.template, today
    recorded = _recorded_event(session, customer, draft.template, today) if customer is not None else None
    if recorded is not None:
        context.update(recorded.context or {})
        occasion, due_date = recorded.occasion, recorded.due_date
    who = customer or sample_customer(center)
    event = CareEvent(
        template=draft.template,
        channel=draft.channel,
        locale=draft.locale,
        purpose=purpose,
        plugin=draft.template,
        occasion=occasion,
        due_date=due_date,
        context=context,
    )
    label = f"{who.name} ({who.external_id})"
    try:
        body, subject = render_event(runtime_with_draft(runtime, draft), event, who, center)
    except TemplateError as exc:
        return Preview(None, None, str(exc), None, None, label, due_date)
    segments = count_segments(body) if draft.channel in SMS_CHANNELS else None
    return Preview(
        body, subject, None, segments, footer_for(body, draft.channel, purpose, draft.locale), label, due_date
    )
