"""WhatsApp content templates: a care template may name its pre-approved content SID and variables.

Outside the 24-hour customer-service window WhatsApp delivers only templates Meta approved
beforehand. A sidecar file next to the message template says which one and how to fill it::

    # templates/birthday/whatsapp.en.toml
    content_sid = "HXb5b62575e6e4ff6129ad7c8efe1f983e"
    [variables]
    1 = "{{ customer.name }}"
    2 = "{{ center.name }}"

Each variable is a template expression rendered in the same sandbox as the message. The
``whatsapp.<locale>.j2`` next to it stays the recorded text of the message.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateNotFound, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError

from careflow.errors import TemplateError
from careflow.rendering.store import TemplateStore, locale_chain

_CONTENT_SID = re.compile(r"^HX[0-9a-fA-F]{32}$")


@dataclass(frozen=True)
class ContentTemplate:
    """What Twilio needs to send an approved template: its SID and the variables as JSON."""

    content_sid: str
    content_variables: str


def find_sidecar(
    store: TemplateStore, template: str, locale: str | None, center_code: str, center_locale: str
) -> tuple[str, str] | None:
    """The sidecar's name and text, looked up like templates (center override, locale chain)."""
    loader = store.env.loader
    assert loader is not None
    for loc in locale_chain(locale, center_locale):
        for prefix in (f"centers/{center_code}/", ""):
            name = f"{prefix}{template}/whatsapp.{loc}.toml"
            try:
                source, _, _ = loader.get_source(store.env, name)
            except TemplateNotFound:
                continue
            return name, source
    return None


def content_template(
    store: TemplateStore,
    template: str,
    *,
    locale: str | None,
    center_code: str,
    center_locale: str,
    variables: Mapping[str, Any],
) -> ContentTemplate | None:
    """The approved template to send instead of free text, or None when the care template has none."""
    found = find_sidecar(store, template, locale, center_code, center_locale)
    if found is None:
        return None
    name, source = found
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"{name}: not valid TOML: {exc}") from None
    unknown = set(data) - {"content_sid", "variables"}
    if unknown:
        raise TemplateError(
            f"{name}: unknown key(s) {', '.join(sorted(unknown))}; expected content_sid, variables"
        )
    sid = data.get("content_sid")
    if not isinstance(sid, str) or not _CONTENT_SID.match(sid):
        raise TemplateError(
            f"{name}: content_sid must be the approved template's SID: 'HX' and 32 hex digits"
        )
    raw_vars = data.get("variables", {})
    if not isinstance(raw_vars, dict) or not all(isinstance(v, str) for v in raw_vars.values()):
        raise TemplateError(
            f'{name}: [variables] must map placeholders to text, e.g. 1 = "{{{{ customer.name }}}}"'
        )
    rendered: dict[str, str] = {}
    for key, expression in raw_vars.items():
        try:
            # The center's own environment: an expression includes no other center's template.
            value = store.env_for(center_code).from_string(expression).render(dict(variables)).strip()
        except (
            TemplateSyntaxError,
            TemplateNotFound,
            UndefinedError,
            SecurityError,
            TypeError,
            ValueError,
        ) as exc:
            raise TemplateError(f"{name}: variable {key}: {type(exc).__name__}: {exc}") from None
        if not value:
            # WhatsApp rejects a template whose placeholder is empty.
            raise TemplateError(f"{name}: variable {key} rendered empty")
        rendered[str(key)] = value
    return ContentTemplate(content_sid=sid, content_variables=json.dumps(rendered, ensure_ascii=False))
