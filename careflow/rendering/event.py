"""The event renderer: one care event's message, as delivery sends it and previews show it.

Delivery renders through it before each send; the CLI's dry run and the console's preview
and dry run call the very same functions, so what they show is what would be sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from careflow.care import Purpose
from careflow.customers.cities import display_name
from careflow.rendering.email_parts import with_footer
from careflow.rendering.store import Rendered
from careflow.rendering.unsubscribe_links import unsubscribe_url
from careflow.storage.models import CareEvent, Center, Customer

if TYPE_CHECKING:
    from careflow.runtime import Runtime


def template_variables(
    event: CareEvent, customer: Customer, center: Center, runtime: Runtime
) -> dict[str, Any]:
    """Plain data only: the sandbox never sees ORM objects or anything with behaviour."""
    birthday = None
    if customer.birth_month and customer.birth_day:
        birthday = {"month": customer.birth_month, "day": customer.birth_day, "year": customer.birth_year}
    center_cfg = runtime.settings.centers.get(center.code)
    variables: dict[str, Any] = {
        "customer": {
            "name": customer.name,
            "external_id": customer.external_id,
            # Cards keep one canonical name (深圳); a message says it in its own language.
            "city": display_name(customer.city, event.locale) if customer.city else None,
            "birthday": birthday,
        },
        "center": {
            "code": center.code,
            "name": center.name,
            "help_text": center_cfg.help_text if center_cfg else "",
        },
        "occasion": event.occasion,
        "due_date": event.due_date.isoformat(),
        **event.context,
    }
    for extra in runtime.registry.pm.hook.careflow_template_context(event=event, customer=customer):
        if extra:
            variables.update(extra)
    return variables


def render_event(
    runtime: Runtime, event: CareEvent, customer: Customer, center: Center
) -> tuple[str, str | None]:
    rendered = render_event_parts(runtime, event, customer, center)
    return rendered.body, rendered.subject


def render_event_parts(
    runtime: Runtime,
    event: CareEvent,
    customer: Customer,
    center: Center,
    *,
    variables: Mapping[str, Any] | None = None,
) -> Rendered:
    """Render the event's template; an e-mail also gets its HTML part and the center's footer.

    ``variables``: the event's ``template_variables``, when the caller needs them for more than
    the body (a WhatsApp content template), so the plugins' context hook runs once per event.
    """
    rendered = runtime.templates.render(
        event.template,
        event.channel or "sms",
        locale=event.locale,
        center_code=center.code,
        center_locale=center.locale,
        variables=template_variables(event, customer, center, runtime) if variables is None else variables,
        marketing=event.purpose == Purpose.MARKETING,
    )
    center_cfg = runtime.settings.centers.get(center.code)
    if event.channel == "email" and rendered.subject is None:
        # Written from an SMS template: the center's name is an honest subject line.
        rendered = replace(rendered, subject=center.name)
    if event.channel == "email" and rendered.html is not None and center_cfg is not None:
        text, html = with_footer(
            rendered.body,
            rendered.html,
            center=center_cfg,
            locale=rendered.locale,
            unsubscribe_url=unsubscribe_url(runtime.settings, customer.id),
        )
        rendered = replace(rendered, body=text, html=html)
    return rendered
