"""Templates as the console shows them: every key from files and the database, versions, saves, rollback."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from jinja2 import TemplateNotFound
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from careflow.errors import CareflowError
from careflow.rendering.database import template_name
from careflow.rendering.lint import Finding, Severity, blocking
from careflow.runtime import Runtime
from careflow.storage.models import TemplateVersion
from careflow.web.console.preview import Draft


@dataclass
class TemplateKey:
    template: str
    channel: str
    locale: str
    file_source: str | None = None  # "shipped", "plugin", "override" or None (console only)
    scopes: dict[str, int] = field(default_factory=dict)  # scope -> newest version number


class LintFailed(CareflowError):
    """Raised when a save is attempted with blocking lint findings."""

    def __init__(self, findings: list[Finding]) -> None:
        super().__init__("; ".join(str(f) for f in findings if f.severity is Severity.ERROR))
        self.findings = findings


def list_templates(runtime: Runtime, session: Session, scopes: list[str]) -> list[TemplateKey]:
    """Every (template, channel, locale) there is a text for, with where it comes from."""
    keys: dict[tuple[str, str, str], TemplateKey] = {}
    dirs = runtime.templates.search_path
    override = runtime.settings.templates.dir
    for directory in dirs:
        kind = "override" if override is not None and directory == override else "plugin"
        if directory == dirs[-1]:
            kind = "shipped"
        for path in sorted(directory.glob("*/*.*.j2")):
            channel, locale = path.name[: -len(".j2")].split(".", 1)
            key = (path.parent.name, channel, locale)
            keys.setdefault(key, TemplateKey(*key, file_source=kind))
    rows = session.execute(
        select(
            TemplateVersion.template,
            TemplateVersion.channel,
            TemplateVersion.locale,
            TemplateVersion.scope,
            func.max(TemplateVersion.version),
        )
        .where(TemplateVersion.scope.in_(scopes))
        .group_by(
            TemplateVersion.template, TemplateVersion.channel, TemplateVersion.locale, TemplateVersion.scope
        )
    )
    for template, channel, locale, scope, version in rows:
        entry = keys.setdefault((template, channel, locale), TemplateKey(template, channel, locale))
        entry.scopes[scope] = int(version)
    return sorted(keys.values(), key=lambda k: (k.template, k.channel, k.locale))


def current_text(runtime: Runtime, scope: str, template: str, channel: str, locale: str) -> str:
    """The text a scope uses today: its own version, else what it inherits (global, files)."""
    env = runtime.templates.env
    assert env.loader is not None
    names = [template_name(scope, template, channel, locale)]
    if scope:
        names.append(template_name("", template, channel, locale))
    for name in names:
        try:
            source, _, _ = env.loader.get_source(env, name)
        except TemplateNotFound:
            continue
        return source
    return ""


def versions(session: Session, scope: str, template: str, channel: str, locale: str) -> list[TemplateVersion]:
    """Newest first."""
    return list(
        session.scalars(
            select(TemplateVersion)
            .where(
                TemplateVersion.scope == scope,
                TemplateVersion.template == template,
                TemplateVersion.channel == channel,
                TemplateVersion.locale == locale,
            )
            .order_by(TemplateVersion.version.desc())
        )
    )


def diff_to_previous(history: list[TemplateVersion], index: int, inherited: str) -> str:
    """The unified diff a version made (against the one before it, or the inherited text)."""
    before = history[index + 1].body if index + 1 < len(history) else inherited
    after = history[index].body
    lines = difflib.unified_diff(
        before.splitlines(), after.splitlines(), "before", f"v{history[index].version}", lineterm="", n=1
    )
    return "\n".join(list(lines)[2:])


def save_version(
    session: Session, draft: Draft, author: str, findings: list[Finding], note: str | None = None
) -> TemplateVersion:
    """Publish ``draft`` as the next version; refused while lint reports an error."""
    if blocking(findings):
        raise LintFailed(findings)
    newest = session.scalar(
        select(func.max(TemplateVersion.version)).where(
            TemplateVersion.scope == draft.scope,
            TemplateVersion.template == draft.template,
            TemplateVersion.channel == draft.channel,
            TemplateVersion.locale == draft.locale,
        )
    )
    version = TemplateVersion(
        scope=draft.scope,
        template=draft.template,
        channel=draft.channel,
        locale=draft.locale,
        version=(newest or 0) + 1,
        body=draft.source,
        author=author,
        note=note,
    )
    session.add(version)
    session.flush()
    return version


def draft_of(version: TemplateVersion) -> Draft:
    return Draft(version.scope, version.template, version.channel, version.locale, version.body)
