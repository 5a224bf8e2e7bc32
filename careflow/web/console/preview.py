"""Render an unsaved template exactly as a send would: careflow.delivery's render path, one name swapped."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from jinja2 import ChoiceLoader, DictLoader
from sqlalchemy import select
from sqlalchemy.orm import Session

from careflow.care import CarePlugin
from careflow.delivery import render_event
from careflow.errors import TemplateError
from careflow.models import CareEvent, Center, Customer, Purpose
from careflow.runtime import Runtime
from careflow.template_db import template_name
from careflow.templates import OPT_OUT_FOOTERS
from careflow.web.console.sms_segments import SegmentCount, count_segments

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
    segments: SegmentCount | None
    footer: str | None  # the opt-out footer careflow appended, if it did
    recipient: str  # whom the preview was rendered for


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


def sample_context(plugin: CarePlugin | None) -> dict[str, Any]:
    """Occasion data for a preview: the plugin's ``sample_context`` if it offers one, else placeholders."""
    offered = getattr(plugin, "sample_context", None)
    if isinstance(offered, Mapping):
        return dict(offered)
    context: dict[str, Any] = {}
    for name in plugin.variables if plugin else {}:
        top = name.split(".")[0]
        if top not in ("customer", "center"):
            context[top] = f"‹{top}›"
    return context


def _latest_context(session: Session, customer: Customer, plugin: str) -> dict[str, Any] | None:
    event = session.scalar(
        select(CareEvent)
        .where(CareEvent.customer_id == customer.id, CareEvent.plugin == plugin)
        .order_by(CareEvent.id.desc())
        .limit(1)
    )
    return dict(event.context) if event is not None else None


def runtime_with_draft(runtime: Runtime, draft: Draft) -> Runtime:
    """The same runtime, whose template store sees ``draft`` in place of its saved version."""
    store = copy.copy(runtime.templates)
    base_loader = runtime.templates.env.loader
    assert base_loader is not None
    store.env = runtime.templates.env.overlay(
        loader=ChoiceLoader([DictLoader({draft.name: draft.source}), base_loader]), cache_size=0
    )
    return dataclasses.replace(runtime, templates=store)


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
    customer: Customer | None = None,
    today: date | None = None,
) -> Preview:
    """What ``customer`` (or a sample customer) would receive if ``draft`` were published now."""
    purpose = str(plugin.purpose) if plugin else str(Purpose.MARKETING)
    context = sample_context(plugin)
    if customer is not None:
        context.update(_latest_context(session, customer, draft.template) or {})
    who = customer or sample_customer(center)
    event = CareEvent(
        template=draft.template,
        channel=draft.channel,
        locale=draft.locale,
        purpose=purpose,
        plugin=draft.template,
        occasion=draft.template,
        due_date=today or date.today(),
        context=context,
    )
    label = f"{who.name} ({who.external_id})"
    try:
        body, subject = render_event(runtime_with_draft(runtime, draft), event, who, center)
    except TemplateError as exc:
        return Preview(None, None, str(exc), None, None, label)
    segments = count_segments(body) if draft.channel in SMS_CHANNELS else None
    return Preview(
        body, subject, None, segments, footer_for(body, draft.channel, purpose, draft.locale), label
    )
