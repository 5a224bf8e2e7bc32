"""Checks a template must pass before it can be published; one function so a shared linter can replace it.

``lint_template`` is the whole interface: the console calls nothing else from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import TemplateSyntaxError, meta
from sqlalchemy import select
from sqlalchemy.orm import Session

from careflow.care import CarePlugin
from careflow.models import Center, TemplateVersion
from careflow.runtime import Runtime
from careflow.web.console.preview import Draft, preview_draft

MAX_SMS_SEGMENTS = 3  # a longer text costs more than it earns and is split unreliably on old phones
# Variables careflow.delivery.template_variables always provides.
CORE_VARIABLES = frozenset({"customer", "center", "occasion", "due_date", "locale"})


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" blocks publishing; "warning" is shown and allowed
    kind: str  # syntax, undefined, sandbox, render, segments, missing_locale
    message: str
    line: int | None = None


def _render_kind(message: str) -> str:
    if "not allowed in templates" in message:
        return "sandbox"
    if "undefined variable" in message:
        return "undefined"
    if "syntax error" in message:
        return "syntax"
    return "render"


def existing_locales(runtime: Runtime, session: Session, template: str, channel: str, scope: str) -> set[str]:
    """Locales that have a text for this template: shipped files, plugin dirs, console versions."""
    found: set[str] = set()
    for directory in runtime.templates.search_path:
        for sub in (directory / template, directory / "centers" / scope / template if scope else None):
            if sub is not None and sub.is_dir():
                found.update(p.name.split(".")[1] for p in sub.glob(f"{channel}.*.j2"))
    rows = session.scalars(
        select(TemplateVersion.locale).where(
            TemplateVersion.template == template,
            TemplateVersion.channel == channel,
            TemplateVersion.scope.in_(["", scope]),
        )
    )
    found.update(rows)
    return found


def lint_template(
    runtime: Runtime, session: Session, draft: Draft, center: Center, plugin: CarePlugin | None
) -> list[Finding]:
    """Every problem with ``draft``; any finding of severity "error" means it cannot be published."""
    findings: list[Finding] = []
    env = runtime.templates.env
    try:
        ast = env.parse(draft.source)
    except TemplateSyntaxError as exc:
        return [Finding("error", "syntax", f"syntax error: {exc.message}", exc.lineno)]
    known = set(CORE_VARIABLES)
    if plugin is not None:
        known.update(name.split(".")[0] for name in plugin.variables)
    for name in sorted(meta.find_undeclared_variables(ast) - known):
        findings.append(
            Finding(
                "error",
                "undefined",
                f"undefined variable {name!r}: the {draft.template} plugin does not provide it",
            )
        )
    preview = preview_draft(runtime, session, draft, center, plugin)
    if preview.error:
        kind = _render_kind(preview.error)
        if not (kind == "undefined" and any(f.kind == "undefined" for f in findings)):
            findings.append(Finding("error", kind, preview.error))
    elif preview.segments is not None and preview.segments.segments > MAX_SMS_SEGMENTS:
        findings.append(
            Finding(
                "error",
                "segments",
                f"{preview.segments.segments} SMS segments ({preview.segments.encoding}, "
                f"{preview.segments.units} units with the footer); at most {MAX_SMS_SEGMENTS} are allowed",
            )
        )
    findings.extend(_missing_locales(runtime, session, draft, center))
    return findings


def _missing_locales(runtime: Runtime, session: Session, draft: Draft, center: Center) -> list[Finding]:
    """A warning, not an error: the text being edited is not the one that is missing."""
    have = existing_locales(runtime, session, draft.template, draft.channel, draft.scope) | {draft.locale}
    needed = {c.locale for c in runtime.settings.centers.values()} if not draft.scope else {center.locale}
    return [
        Finding(
            "warning",
            "missing_locale",
            f"no {loc} text for {draft.template}/{draft.channel}: {loc} customers get a fallback language",
        )
        for loc in sorted(needed)
        if loc not in have and loc.split("_")[0] not in have
    ]


def blocking(findings: list[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)
