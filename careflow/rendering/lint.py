"""Template lint: what a marketer's template would do wrong, found before any customer sees it.

The one linter careflow has: ``lint_draft`` is what the console shows while a text is edited
and what blocks publishing it; ``lint_store`` checks every template careflow would use
(``careflow templates lint`` and ``careflow doctor``); ``lint_refusal`` is the send-time gate:
a template with an error finding is never used for a send. All of them run ``lint_source``
with the same sample values (``LintContext``, from the plugins' ``samples``), so a text the
console publishes is a text delivery sends. Each finding names the template, the line, the
kind of problem and what to do; its severity says whether it blocks (errors) or informs
(warnings: a missing locale).
"""

from __future__ import annotations

import enum
import threading
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateNotFound, TemplateSyntaxError, meta, nodes

from careflow.care import CarePlugin, Purpose
from careflow.errors import TemplateBudgetError, TemplateError
from careflow.policies.bundling import BUNDLE, BUNDLE_SAMPLES, BUNDLE_VARIABLES
from careflow.rendering.scope import may_use, refusal, scope_of
from careflow.rendering.sms_segments import count_segments
from careflow.rendering.store import TemplateStore
from careflow.storage.models import CareEvent, Center

if TYPE_CHECKING:
    from careflow.runtime import Runtime

# Locales every care template should exist in (careflow's two shipped languages).
REQUIRED_LOCALES = ("zh_CN", "en")
SMS_CHANNELS = frozenset({"sms", "whatsapp"})
# Largest constant ``range()`` a template may build; the sandbox itself stops at 100 000.
MAX_RANGE = 1_000
# Attributes that lead out of the sandbox or format strings (CVE-2024-56326, CVE-2025-27516).
_UNSAFE_METHODS = frozenset({"format", "format_map", "mro", "__subclasses__"})


class FindingKind(enum.StrEnum):
    SYNTAX = "syntax"
    UNDEFINED = "undefined-variable"
    UNSAFE = "unsafe"
    OTHER_CENTER = "other-center"  # includes, imports or extends another center's template
    MISSING_TEMPLATE = "missing-template"  # includes, imports or extends a template that does not exist
    BUDGET = "budget"  # the render budget (careflow.rendering.sandbox) ran out
    SEGMENTS = "segments"
    MISSING_LOCALE = "missing-locale"
    RENDER = "render"


class Severity(enum.StrEnum):
    ERROR = "error"  # blocks publishing in the console and refuses sends
    WARNING = "warning"  # shown, allowed


@dataclass(frozen=True)
class Finding:
    """One problem: which template, which line (None for the whole file), what kind, what to do."""

    template: str
    line: int | None
    kind: FindingKind
    message: str

    @property
    def severity(self) -> Severity:
        # A missing locale is about a file that is not there, not the text being checked.
        return Severity.WARNING if self.kind is FindingKind.MISSING_LOCALE else Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.template} line {self.line}" if self.line else self.template
        return f"{where}: {self.kind}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "template": self.template,
            "line": self.line,
            "severity": str(self.severity),
            "kind": str(self.kind),
            "message": self.message,
        }


def blocking(findings: Iterable[Finding]) -> bool:
    """Whether any finding is an error: such a text is not published and not sent."""
    return any(f.severity is Severity.ERROR for f in findings)


# Variables careflow itself passes to every template (see careflow.rendering.event.template_variables).
CORE_VARIABLES: dict[str, str] = {
    "customer": "the customer: name, external_id, city, birthday (month, day, year)",
    "center": "the service center: code, name, help_text",
    "occasion": "the occasion key, e.g. 'birthday'",
    "due_date": "the local day the occasion falls on (ISO date; use | date)",
    "locale": "the locale the template renders in, e.g. 'zh_CN'",
    "segment": "the customer's segments: tier (A/B/C), warranty, activity, rfm scores",
}


def core_samples(locale: str, center_name: str) -> dict[str, Any]:
    """Realistic, slightly long sample values: segment counts should not flatter a template."""
    chinese = locale.startswith("zh")
    return {
        "customer": {
            "name": "欧阳文华" if chinese else "Alexandra Montgomery",
            "external_id": "C-000123",
            "city": "上海" if chinese else "Shanghai",
            "birthday": {"month": 5, "day": 11, "year": 1988},
        },
        "center": {"code": "main", "name": center_name, "help_text": "Reply STOP to opt out."},
        "occasion": "birthday",
        "due_date": "2026-05-11",
        "locale": locale,
        "segment": {
            "tier": "A",
            "warranty": "warranty",
            "activity": "active",
            "rfm": {"recency": 5, "frequency": 4, "monetary": 5},
        },
    }


@dataclass(frozen=True)
class LintContext:
    """What a template may use and how it is sent: its plugin's variables, samples and purpose."""

    variables: Collection[str]  # top-level names besides the core ones
    samples: Mapping[str, Any] = field(default_factory=dict)
    marketing: bool = True
    segment_budget: int = 3
    center_name: str = "Service Center"

    @classmethod
    def for_plugin(
        cls, plugin: CarePlugin | None, others: Collection[CarePlugin], segment_budget: int, center_name: str
    ) -> LintContext:
        """A known plugin's own declarations; for a template no plugin owns, everything declared."""
        declared = [plugin] if plugin is not None else list(others)
        names = {name.split(".")[0] for p in declared for name in p.variables}
        samples: dict[str, Any] = {}
        for p in declared:
            samples.update(p.samples)
        marketing = plugin is None or plugin.purpose == Purpose.MARKETING
        return cls(names, samples, marketing, segment_budget, center_name)

    def occasion_samples(self) -> tuple[dict[str, Any], frozenset[str]]:
        """The plugin's sample values plus placeholders, and the names that only got a placeholder.

        The one place sample values come from: lint's trial render, ``careflow doctor`` and the
        console's preview with sample data all use it.
        """
        values = dict(self.samples)  # a plugin's own "occasion" sample picks the branch to try
        guessed = frozenset(v for v in self.variables if v not in CORE_VARIABLES and v not in values)
        values.update({var: f"‹{var}›" for var in guessed})  # text a marketer recognises in a preview
        return values, guessed


def _split_name(name: str) -> tuple[str, str, str]:
    """``[centers/<c>/]<template>/<channel>.<locale>.j2`` -> (template, channel, locale)."""
    parts = name.split("/")
    template = parts[-2] if len(parts) > 1 else parts[0]
    stem = parts[-1].removesuffix(".j2")
    channel, _, locale = stem.partition(".")
    return template, channel, locale


def lint_source(store: TemplateStore, source: str, name: str, ctx: LintContext) -> list[Finding]:
    """Every finding for one template text; no error finding means it may be used for sends.

    ``name`` says where the text lives (``[centers/<code>/]<template>/<channel>.<locale>.j2``):
    which center's templates it may include, its channel and its locale.
    """
    env = store.env
    try:
        tree = env.parse(source, name=name)
        env.compile(tree, name=name)  # unknown filters and tests are compile-time errors
    except TemplateSyntaxError as exc:
        return [Finding(name, exc.lineno, FindingKind.SYNTAX, exc.message or str(exc))]
    findings = _unsafe(tree, name) + _references(store, tree, name) + _undefined(tree, name, ctx)
    if not findings:
        findings = _trial_render(store, source, name, ctx)
    return findings


def _undefined(tree: nodes.Template, name: str, ctx: LintContext) -> list[Finding]:
    allowed = set(CORE_VARIABLES) | set(ctx.variables)
    unknown = meta.find_undeclared_variables(tree) - allowed
    findings = []
    for var in sorted(unknown):
        line = min((n.lineno for n in tree.find_all(nodes.Name) if n.name == var), default=None)
        known = ", ".join(sorted(allowed))
        findings.append(
            Finding(name, line, FindingKind.UNDEFINED, f"'{var}' is not a template variable; known: {known}")
        )
    return findings


def _unsafe(tree: nodes.Template, name: str) -> list[Finding]:
    """Constructs the sandbox may refuse at send time, or that only a sandbox escape needs."""
    found: list[Finding] = []

    def add(node: nodes.Node, what: str) -> None:
        found.append(Finding(name, node.lineno, FindingKind.UNSAFE, what))

    for getattr_node in tree.find_all(nodes.Getattr):
        if getattr_node.attr.startswith("_"):
            add(getattr_node, f"access to '{getattr_node.attr}': underscore attributes are not allowed")
    for item in tree.find_all(nodes.Getitem):
        if isinstance(item.arg, nodes.Const) and str(item.arg.value).startswith("_"):
            add(item, f"access to '{item.arg.value}': underscore attributes are not allowed")
    for flt in tree.find_all(nodes.Filter):
        if flt.name == "attr":
            add(flt, "the 'attr' filter is not allowed: use plain dotted names like customer.name")
    for call in tree.find_all(nodes.Call):
        target = call.node
        if isinstance(target, nodes.Getattr) and target.attr in _UNSAFE_METHODS:
            add(call, f"calling '.{target.attr}()' is not allowed in templates")
        if isinstance(target, nodes.Name) and target.name == "range":
            sizes = [a.value for a in call.args if isinstance(a, nodes.Const)]
            if len(sizes) != len(call.args) or any(not isinstance(s, int) or s > MAX_RANGE for s in sizes):
                add(call, f"range() must have small constant bounds (at most {MAX_RANGE})")
    for ref in tree.find_all(_REFERENCES):
        if not isinstance(getattr(ref, "template", None), nodes.Const):
            add(ref, "template names must be literal: a computed name could load any template")
    return sorted(found, key=lambda f: (f.line or 0, f.message))


_REFERENCES = (nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)


def _references(store: TemplateStore, tree: nodes.Template, name: str) -> list[Finding]:
    """Templates this one includes, imports or extends: in its center's reach, and existing.

    Checked for every branch, taken or not: the render at send time would fail only for the
    customers who reach it (careflow.rendering.scope fences renders the same way).
    """
    scope = scope_of(name)
    env = store.env_for(scope)
    found: list[Finding] = []
    for ref in tree.find_all(_REFERENCES):
        target = getattr(ref, "template", None)
        if not isinstance(target, nodes.Const) or target.value == name:
            continue  # computed names are unsafe findings already
        other = str(target.value)
        if not may_use(scope, other):
            found.append(Finding(name, ref.lineno, FindingKind.OTHER_CENTER, refusal(scope, other)))
            continue
        if getattr(ref, "ignore_missing", False):
            continue
        assert env.loader is not None
        try:
            env.loader.get_source(env, other)
        except TemplateNotFound:
            found.append(Finding(name, ref.lineno, FindingKind.MISSING_TEMPLATE, f"'{other}' does not exist"))
    return found


def _trial_render(store: TemplateStore, source: str, name: str, ctx: LintContext) -> list[Finding]:
    """Render with sample values exactly as a send would (footer, budget) and count SMS segments."""
    _, channel, locale = _split_name(name)
    occasion, guessed = ctx.occasion_samples()
    try:
        rendered = store.with_sources({name: source}).render_name(
            name,
            channel,
            center_code=scope_of(name),
            variables={**core_samples(locale, ctx.center_name), **occasion},
            marketing=ctx.marketing,
            allow_empty=True,  # a branch the samples do not take may be the one with the text
        )
    except TemplateBudgetError as exc:
        return [
            Finding(
                name,
                exc.line,
                FindingKind.BUDGET,
                f"{exc.cause}; a message needs no nested loops over long values, no recursion",
            )
        ]
    except TemplateError as exc:
        if guessed:
            # A placeholder (say, text where a date is expected) broke the trial render, not the
            # template: lint cannot judge it, and the real render at send time reports real errors.
            return []
        return [
            Finding(
                name,
                exc.line,
                FindingKind.RENDER,
                f"does not render with sample values ({exc.cause}); "
                "declare sample values in the plugin's 'samples'",
            )
        ]
    if channel not in SMS_CHANNELS:
        return []
    segments = count_segments(rendered.body)
    if segments.count <= ctx.segment_budget:
        return []
    footer_note = " including the opt-out footer" if ctx.marketing else ""
    return [
        Finding(
            name,
            None,
            FindingKind.SEGMENTS,
            f"renders to {segments.count} SMS segments ({segments.encoding}, {segments.units} units"
            f"{footer_note}) with sample values; the budget is {ctx.segment_budget} "
            "([templates] sms_segment_budget). Shorten the text",
        )
    ]


def lint_context(runtime: Runtime, name: str, plugin_name: str | None = None) -> LintContext:
    """What the template called ``name`` may use and how it is sent, from its plugin and center."""
    template, _, _ = _split_name(name)
    plugins = runtime.registry.care_plugins
    plugin = plugins.get(plugin_name or template) or plugins.get(template)
    center = runtime.settings.centers.get(scope_of(name) or runtime.settings.default_center)
    center_name = center.name if center else "Service Center"
    budget = runtime.settings.templates.sms_segment_budget
    if plugin is None and BUNDLE in (plugin_name, template):
        # Bundles are planned by careflow itself (careflow.policies.bundling), not by a care plugin.
        return LintContext(BUNDLE_VARIABLES, BUNDLE_SAMPLES, True, budget, center_name)
    return LintContext.for_plugin(plugin, list(plugins.values()), budget, center_name)


def lint_store(runtime: Runtime) -> list[Finding]:
    """Lint every template careflow would use (overrides shadow shipped files), plus missing locales."""
    store = runtime.templates
    names = sorted(n for n in store.loader.list_templates() if n.endswith(".j2"))
    findings: list[Finding] = []
    for name in names:
        source, _, _ = store.loader.get_source(store.env, name)
        findings += lint_source(store, source, name, lint_context(runtime, name))
    return findings + missing_locales(runtime, names)


def lint_draft(runtime: Runtime, name: str, source: str) -> list[Finding]:
    """What the console shows while ``source`` is edited under ``name``, and what blocks publishing it."""
    findings = lint_source(runtime.templates, source, name, lint_context(runtime, name))
    template, channel, _ = _split_name(name)
    names = [*runtime.templates.loader.list_templates(), name]
    return findings + missing_locales(runtime, names, only=(template, channel), scope=scope_of(name))


def missing_locales(
    runtime: Runtime, names: Iterable[str], *, only: tuple[str, str] | None = None, scope: str = ""
) -> list[Finding]:
    """Warnings for (template, channel) pairs without a text in a locale careflow needs.

    Needed: careflow's two shipped languages and every configured center's locale; a language
    file (``zh``) serves its regional locales (``zh_CN``), as the loader's fallback does.
    Only global names (and ``scope``'s, whose overrides fall back to them) count.
    """
    needed = dict.fromkeys([*REQUIRED_LOCALES, *(c.locale for c in runtime.settings.centers.values())])
    present: dict[tuple[str, str], set[str]] = defaultdict(set)
    for name in names:
        if name.endswith(".j2") and scope_of(name) in ("", scope):
            template, channel, locale = _split_name(name)
            if only is None or (template, channel) == only:
                present[(template, channel)].add(locale)
    findings = []
    for (template, channel), have in sorted(present.items()):
        for locale in needed:
            if locale not in have and locale.split("_")[0] not in have:
                findings.append(
                    Finding(
                        f"{template}/{channel}.{locale}.j2",
                        None,
                        FindingKind.MISSING_LOCALE,
                        f"no {locale} version of {template} on {channel} "
                        f"(has: {', '.join(sorted(have))}); those customers get another language",
                    )
                )
    return findings


_cache: dict[tuple[str, str, str, int], list[Finding]] = {}
_cache_lock = threading.Lock()


def lint_refusal(runtime: Runtime, event: CareEvent, center: Center) -> str | None:
    """Why this event's template must not be used for a send, or None when it passes lint."""
    channel = event.channel or "sms"
    return runtime.templates.within_batch(
        ("lint", event.template, channel, event.locale, center.code, center.locale, event.plugin),
        lambda: _lint_refusal(runtime, event, center, channel),
    )


def _lint_refusal(runtime: Runtime, event: CareEvent, center: Center, channel: str) -> str | None:
    store = runtime.templates
    try:
        name = store.resolve(event.template, channel, event.locale, center.code, center.locale)
    except TemplateError:
        return None  # rendering reports a missing or unparsable template with its own clear error
    source, _, _ = store.loader.get_source(store.env, name)
    key = (name, source, event.plugin, runtime.settings.templates.sms_segment_budget)
    with _cache_lock:
        findings = _cache.get(key)
    if findings is None:
        findings = lint_source(store, source, name, lint_context(runtime, name, event.plugin))
        with _cache_lock:
            if len(_cache) > 1_000:
                _cache.clear()
            _cache[key] = findings
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if not errors:
        return None
    return f"template {name} fails lint, not used: " + "; ".join(str(f) for f in errors[:3])
