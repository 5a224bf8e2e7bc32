"""Template lint: what a marketer's template would do wrong, found before any customer sees it.

``lint_source`` checks one template text (the web editor calls it on unsaved text);
``lint_store`` checks every template careflow would use; ``lint_refusal`` is the send-time
gate: a template with findings is never used for a send. Each finding names the template,
the line, the kind of problem and what to do.
"""

from __future__ import annotations

import enum
import threading
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError

from careflow.bundling import BUNDLE, BUNDLE_SAMPLES, BUNDLE_VARIABLES
from careflow.care import CarePlugin
from careflow.models import CareEvent, Center, Purpose
from careflow.runtime import Runtime
from careflow.sms_segments import count_segments
from careflow.templates import with_opt_out_footer

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
    SEGMENTS = "segments"
    MISSING_LOCALE = "missing-locale"
    RENDER = "render"


@dataclass(frozen=True)
class Finding:
    """One problem: which template, which line (None for the whole file), what kind, what to do."""

    template: str
    line: int | None
    kind: FindingKind
    message: str

    def __str__(self) -> str:
        where = f"{self.template} line {self.line}" if self.line else self.template
        return f"{where}: {self.kind}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"template": self.template, "line": self.line, "kind": str(self.kind), "message": self.message}


# Variables careflow itself passes to every template (see delivery.template_variables).
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


def _split_name(name: str) -> tuple[str, str, str]:
    """``[centers/<c>/]<template>/<channel>.<locale>.j2`` -> (template, channel, locale)."""
    parts = name.split("/")
    template = parts[2] if parts[0] == "centers" and len(parts) > 3 else parts[0]
    stem = parts[-1].removesuffix(".j2")
    channel, _, locale = stem.partition(".")
    return template, channel, locale


def lint_source(env: Environment, source: str, name: str, ctx: LintContext) -> list[Finding]:
    """Every finding for one template text; an empty list means it may be used for sends."""
    try:
        tree = env.parse(source, name=name)
        env.compile(tree, name=name)  # unknown filters and tests are compile-time errors
    except TemplateSyntaxError as exc:
        return [Finding(name, exc.lineno, FindingKind.SYNTAX, exc.message or str(exc))]
    findings = _unsafe(tree, name) + _undefined(tree, name, ctx)
    _, channel, locale = _split_name(name)
    if not findings and channel in SMS_CHANNELS:
        findings += _segments(env, source, name, locale, ctx)
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
    for ref in tree.find_all((nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
        if not isinstance(getattr(ref, "template", None), nodes.Const):
            add(ref, "template names must be literal: a computed name could load any template")
    return sorted(found, key=lambda f: (f.line or 0, f.message))


def _segments(env: Environment, source: str, name: str, locale: str, ctx: LintContext) -> list[Finding]:
    """Render with sample values, add the opt-out footer as a send would, and count segments."""
    variables = {**core_samples(locale, ctx.center_name), **ctx.samples}
    guessed = {var for var in ctx.variables if var not in variables}
    for var in guessed:
        variables[var] = "X" * 10  # a plausible length for a value without a sample
    try:
        tpl = env.from_string(source)
        if "body" in tpl.blocks:
            body = "".join(tpl.blocks["body"](tpl.new_context(variables)))
        else:
            body = tpl.render(variables)
    except (UndefinedError, SecurityError, TypeError, ValueError, ArithmeticError) as exc:
        if guessed:
            # A placeholder (say, text where a date is expected) broke the trial render, not the
            # template: lint cannot judge it, and the real render at send time reports real errors.
            return []
        return [
            Finding(
                name,
                None,
                FindingKind.RENDER,
                f"does not render with sample values ({type(exc).__name__}: {exc}); "
                "declare sample values in the plugin's 'samples'",
            )
        ]
    body = body.strip()
    footer_note = ""
    if ctx.marketing:
        body = with_opt_out_footer(body, locale or "en")
        footer_note = " including the opt-out footer"
    segments = count_segments(body)
    if segments.count > ctx.segment_budget:
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
    return []


def _context_for(runtime: Runtime, name: str, plugin_name: str | None = None) -> LintContext:
    template, _, _ = _split_name(name)
    plugins = runtime.registry.care_plugins
    plugin = plugins.get(plugin_name or template) or plugins.get(template)
    parts = name.split("/")
    center_code = parts[1] if parts[0] == "centers" else runtime.settings.default_center
    center = runtime.settings.centers.get(center_code)
    if plugin is None and BUNDLE in (plugin_name, template):
        # Bundles are planned by careflow itself (careflow.bundling), not by a care plugin.
        return LintContext(
            BUNDLE_VARIABLES,
            BUNDLE_SAMPLES,
            marketing=True,
            segment_budget=runtime.settings.templates.sms_segment_budget,
            center_name=center.name if center else "Service Center",
        )
    return LintContext.for_plugin(
        plugin,
        list(plugins.values()),
        runtime.settings.templates.sms_segment_budget,
        center.name if center else "Service Center",
    )


def lint_store(runtime: Runtime) -> list[Finding]:
    """Lint every template careflow would use (overrides shadow shipped files), plus missing locales."""
    env = runtime.templates.env
    assert env.loader is not None
    names = [n for n in env.list_templates() if n.endswith(".j2")]
    findings: list[Finding] = []
    locales: dict[tuple[str, str], set[str]] = defaultdict(set)
    for name in sorted(names):
        source, _, _ = env.loader.get_source(env, name)
        findings += lint_source(env, source, name, _context_for(runtime, name))
        if not name.startswith("centers/"):  # a center override falls back to the global set
            template, channel, locale = _split_name(name)
            locales[(template, channel)].add(locale)
    for (template, channel), present in sorted(locales.items()):
        for locale in REQUIRED_LOCALES:
            if locale not in present:
                findings.append(
                    Finding(
                        f"{template}/{channel}.{locale}.j2",
                        None,
                        FindingKind.MISSING_LOCALE,
                        f"no {locale} version of {template} on {channel} "
                        f"(has: {', '.join(sorted(present))}); those customers get another language",
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
    from careflow.errors import TemplateError

    store = runtime.templates
    try:
        name = store.resolve(event.template, channel, event.locale, center.code, center.locale)
    except TemplateError:
        return None  # rendering reports a missing or unparsable template with its own clear error
    assert store.env.loader is not None
    source, _, _ = store.env.loader.get_source(store.env, name)
    key = (name, source, event.plugin, runtime.settings.templates.sms_segment_budget)
    with _cache_lock:
        findings = _cache.get(key)
    if findings is None:
        findings = lint_source(store.env, source, name, _context_for(runtime, name, event.plugin))
        with _cache_lock:
            if len(_cache) > 1_000:
                _cache.clear()
            _cache[key] = findings
    if not findings:
        return None
    return f"template {name} fails lint, not used: " + "; ".join(str(f) for f in findings[:3])
