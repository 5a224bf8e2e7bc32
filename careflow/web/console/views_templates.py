"""Template pages: the list, the editor with live preview and lint, publishing, history and rollback."""

from __future__ import annotations

from sqlalchemy import select
from starlette.responses import Response

from careflow.care import CarePlugin
from careflow.rendering.lint import Finding, blocking, lint_draft
from careflow.rendering.store import CAREFLOW_FILTERS
from careflow.storage.models import Customer, TemplateVersion
from careflow.web.console.app import Ctx, Forbidden, NotFound, guarded
from careflow.web.console.preview import Draft, Preview, preview_draft
from careflow.web.console.security import Perm
from careflow.web.console.template_versions import (
    current_text,
    diff_to_previous,
    draft_of,
    list_templates,
    save_version,
    versions,
)

CORE_VARIABLE_DOCS = {
    "customer.name": "the customer's name",
    "customer.external_id": "the customer's ID in the center's records",
    "customer.city": "the customer's city",
    "customer.birthday": "month, day and year (year may be empty)",
    "center.name": "the service center's name",
    "center.code": "the service center's code",
    "center.help_text": "the center's contact / help line text",
    "occasion": "what the message is about (e.g. birthday)",
    "due_date": "the day the occasion falls on (ISO date; format with | date)",
    "segment.tier": "the customer's segment: A, B or C (also warranty, activity, rfm)",
    "locale": "the language the text is in",
}


def _scopes_for(ctx: Ctx) -> list[str]:
    return ["", ctx.center.code] if ctx.user.can(Perm.EDIT_GLOBAL_TEMPLATES) else [ctx.center.code]


def _draft(ctx: Ctx, source: str | None = None) -> Draft:
    scope = ctx.param("scope", ctx.center.code)
    if scope not in _scopes_for(ctx):
        raise Forbidden(f"{ctx.user.email} may not edit template scope {scope!r}")
    template, channel, locale = ctx.param("template"), ctx.param("channel", "sms"), ctx.param("locale", "en")
    for part in (template, channel, locale):
        if not part or not part.replace("_", "").replace("-", "").isalnum():
            raise NotFound(f"bad template key {template}/{channel}.{locale}")
    if source is None:
        source = (
            ctx.param("source")
            if ctx.form is not None
            else current_text(ctx.runtime, scope, template, channel, locale)
        )
    return Draft(scope, template, channel, locale, source.replace("\r\n", "\n"))


def _plugin(ctx: Ctx, template: str) -> CarePlugin | None:
    return ctx.runtime.registry.care_plugins.get(template)


def _preview_customer(ctx: Ctx) -> Customer | None:
    raw = ctx.param("customer_id")
    if not raw:
        return None
    if not raw.isdigit():
        raise NotFound(raw)
    customer = ctx.db.get(Customer, int(raw))
    if customer is None:
        raise NotFound(raw)
    ctx.check_center(customer.center_id)
    return customer


def _check(ctx: Ctx, draft: Draft) -> tuple[Preview, list[Finding]]:
    """The preview and the findings of the one linter (careflow.rendering.lint), as sends will see them."""
    findings = lint_draft(ctx.runtime, draft.name, draft.source)
    return _preview(ctx, draft, _preview_customer(ctx)), findings


def _preview(ctx: Ctx, draft: Draft, customer: Customer | None = None) -> Preview:
    plugin = _plugin(ctx, draft.template)
    return preview_draft(
        ctx.runtime, ctx.db, draft, ctx.center, plugin, today=ctx.center_today(), customer=customer
    )


@guarded(Perm.EDIT_TEMPLATES)
def template_list(ctx: Ctx) -> Response:
    scopes = _scopes_for(ctx)
    keys = list_templates(ctx.runtime, ctx.db, scopes)
    channels = sorted({*ctx.runtime.channel_order(), *(k.channel for k in keys)})
    return ctx.render(
        "templates.html",
        keys=keys,
        scopes=scopes,
        plugins=ctx.runtime.registry.care_plugins,
        channels=channels,
    )


@guarded(Perm.EDIT_TEMPLATES)
def template_edit(ctx: Ctx) -> Response:
    draft = _draft(ctx)
    return _editor(ctx, draft, *_check(ctx, draft))


def _editor(ctx: Ctx, draft: Draft, preview: Preview, findings: list[Finding], status: int = 200) -> Response:
    plugin = _plugin(ctx, draft.template)
    history = versions(ctx.db, draft.scope, draft.template, draft.channel, draft.locale)
    inherited = (
        current_text(ctx.runtime, "", draft.template, draft.channel, draft.locale) if draft.scope else ""
    )
    diffs = {v.id: diff_to_previous(history, i, inherited) for i, v in enumerate(history)}
    customers = list(
        ctx.db.scalars(
            select(Customer).where(Customer.center_id == ctx.center.id).order_by(Customer.name).limit(200)
        )
    )
    variables = {**CORE_VARIABLE_DOCS, **(dict(plugin.variables) if plugin else {})}
    return ctx.render(
        "template_edit.html",
        status,
        draft=draft,
        preview=preview,
        findings=findings,
        blocked=blocking(findings),
        history=history,
        diffs=diffs,
        customers=customers,
        selected_customer=ctx.param("customer_id"),
        variables=variables,
        filters=sorted(CAREFLOW_FILTERS),
        scopes=_scopes_for(ctx),
        plugin=plugin,
    )


@guarded(Perm.EDIT_TEMPLATES)
def template_preview(ctx: Ctx) -> Response:
    """The htmx fragment under the editor: preview, segments, footer and lint, as the user types."""
    draft = _draft(ctx)
    preview, findings = _check(ctx, draft)
    return ctx.render(
        "_preview.html", draft=draft, preview=preview, findings=findings, blocked=blocking(findings)
    )


@guarded(Perm.EDIT_TEMPLATES)
def template_save(ctx: Ctx) -> Response:
    draft = _draft(ctx)
    preview, findings = _check(ctx, draft)
    if blocking(findings):
        ctx.notices.append(ctx.t("Cannot publish: fix the errors first."))
        return _editor(ctx, draft, preview, findings, status=422)
    version = save_version(ctx.db, draft, ctx.user.email, findings, note=ctx.param("note") or None)
    return ctx.redirect(_edit_path(draft) + f"&saved={version.version}")


@guarded(Perm.EDIT_TEMPLATES)
def template_rollback(ctx: Ctx) -> Response:
    raw = ctx.param("version_id")
    old = ctx.db.get(TemplateVersion, int(raw)) if raw.isdigit() else None
    if old is None:
        raise NotFound(raw)
    if old.scope not in _scopes_for(ctx):
        raise Forbidden(f"version {old.id} belongs to scope {old.scope!r}")
    draft = draft_of(old)
    findings = lint_draft(ctx.runtime, draft.name, draft.source)
    if blocking(findings):
        ctx.notices.append(ctx.t("Cannot publish: fix the errors first."))
        return _editor(ctx, draft, _preview(ctx, draft), findings, status=422)
    version = save_version(ctx.db, draft, ctx.user.email, findings, note=f"rollback to v{old.version}")
    return ctx.redirect(_edit_path(draft) + f"&saved={version.version}&rolledback={old.version}")


def _edit_path(draft: Draft) -> str:
    return (
        f"/templates/edit?template={draft.template}&channel={draft.channel}"
        f"&locale={draft.locale}&scope={draft.scope}"
    )
