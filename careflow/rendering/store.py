"""Marketer-edited message templates: sandboxed, strict, locale-aware, with clear errors."""

from __future__ import annotations

import copy
import importlib
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal
from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    TemplateNotFound,
    TemplateRuntimeError,
    TemplateSyntaxError,
    UndefinedError,
    pass_context,
)
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context

from careflow.errors import TemplateBudgetError, TemplateError
from careflow.rendering.database import DatabaseTemplates, PublishedFirstLoader
from careflow.rendering.sandbox import BudgetedSandbox, RenderBudgetExceeded, joined, render_budget
from careflow.rendering.scope import CenterScopedLoader, ForeignTemplate

MAX_OUTPUT_CHARS = 5_000
T = TypeVar("T")
# Look-ups remembered for the length of one delivery batch (see TemplateStore.batch).
_batch_memo: ContextVar[dict[tuple[Any, ...], Any] | None] = ContextVar(
    "careflow_template_memo", default=None
)

# Channels whose messages can be written from another channel's template when a plugin
# ships none of their own (plain text works everywhere).
TEXT_FALLBACK: dict[str, tuple[str, ...]] = {"whatsapp": ("sms",), "email": ("sms",)}

# The opt-out instruction each language requires on marketing SMS.
OPT_OUT_FOOTERS: dict[str, str] = {
    "zh": "回T退订",
    "en": "Reply STOP to opt out",
}


def builtin_template_dir() -> Path:
    """careflow's shipped default templates (the repository's ``templates/``)."""
    module = importlib.import_module("careflow_templates")
    return Path(str(module.__file__)).parent


def locale_chain(locale: str | None, center_locale: str) -> list[str]:
    """Locales to try, most specific first: zh_CN, zh, the center's default, en."""
    chain: list[str] = []
    for loc in (locale, center_locale, "en"):
        if not loc:
            continue
        for candidate in (loc, loc.split("_")[0]):
            if candidate not in chain:
                chain.append(candidate)
    return chain


def _babel_locale(ctx: Context) -> Locale:
    try:
        return Locale.parse(str(ctx.get("locale") or "en"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse("en")


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


@pass_context
def _filter_date(ctx: Context, value: Any, fmt: str = "long") -> str:
    """``{{ due_date | date }}`` or ``| date('short')``: a date in the customer's language."""
    return str(format_date(_as_date(value), format=fmt, locale=_babel_locale(ctx)))


@pass_context
def _filter_datetime(ctx: Context, value: Any, fmt: str = "medium") -> str:
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return str(format_datetime(dt, format=fmt, locale=_babel_locale(ctx)))


@pass_context
def _filter_money(ctx: Context, value: Any, currency: str = "CNY") -> str:
    """``{{ amount | money }}``: an amount with the currency sign the locale expects."""
    return str(format_currency(Decimal(str(value)), currency, locale=_babel_locale(ctx)))


@pass_context
def _filter_number(ctx: Context, value: Any) -> str:
    return str(format_decimal(Decimal(str(value)), locale=_babel_locale(ctx)))


# The only filters a template can call beyond Jinja's built-ins, declared as data so that
# the docs and the console can list them.
CAREFLOW_FILTERS: dict[str, Any] = {
    "date": _filter_date,
    "datetime": _filter_datetime,
    "money": _filter_money,
    "number": _filter_number,
}


@dataclass(frozen=True)
class Rendered:
    body: str
    subject: str | None
    template_name: str
    locale: str
    html: str | None = None  # e-mail only: the body (or ``html`` block) rendered with autoescaping


class TemplateStore:
    """Finds templates through the loader chain and renders them in the sandbox.

    ``env`` sees every name (listing, reading sources, lint's parsing); a render goes through
    ``env_for(center)``, which sees only that center's overrides, the global ones and the
    shipped texts (careflow.rendering.scope).
    """

    def __init__(
        self,
        override_dir: Path | None = None,
        plugin_dirs: list[Path] | None = None,
        database: DatabaseTemplates | None = None,
    ) -> None:
        dirs = (
            [d for d in (override_dir,) if d is not None] + list(plugin_dirs or []) + [builtin_template_dir()]
        )
        self.search_path = dirs
        self.database = database
        files: BaseLoader = ChoiceLoader([FileSystemLoader(str(d)) for d in dirs])
        # Versions published in the console come before every file (see careflow.rendering.database).
        self._use_loader(PublishedFirstLoader(database, files) if database is not None else files)

    def _use_loader(self, loader: BaseLoader) -> None:
        self.loader = loader
        self.env = _environment(loader, autoescape=False)
        self._scoped: dict[str, tuple[BudgetedSandbox, BudgetedSandbox]] = {}

    def with_sources(self, sources: Mapping[str, str]) -> TemplateStore:
        """A copy that sees ``sources`` (name -> text) before everything else: unsaved drafts."""
        store = copy.copy(self)
        store._use_loader(ChoiceLoader([_Drafts(sources), self.loader]))
        return store

    def env_for(self, center_code: str, *, html: bool = False) -> BudgetedSandbox:
        """The environment a render for ``center_code`` ("" for no center) uses; ``html`` autoescapes."""
        pair = self._scoped.get(center_code)
        if pair is None:
            scoped = CenterScopedLoader(self.loader, center_code)
            pair = self._scoped.setdefault(
                center_code, (_environment(scoped, autoescape=False), _environment(scoped, autoescape=True))
            )
        return pair[1] if html else pair[0]

    def close(self) -> None:
        if self.database is not None:
            self.database.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Within a delivery batch, find each template (and lint it) once, not once per event.

        Fifty events usually share a handful of templates; every look-up walks the locale and
        center fallbacks through the loaders. What is remembered lives only as long as the batch.
        """
        token = _batch_memo.set({})
        try:
            yield
        finally:
            _batch_memo.reset(token)

    @staticmethod
    def within_batch(key: tuple[Any, ...], compute: Callable[[], T]) -> T:
        """``compute()``, remembered under ``key`` for the rest of the current ``batch()``."""
        memo = _batch_memo.get()
        if memo is None:
            return compute()
        if key not in memo:
            memo[key] = compute()
        return cast(T, memo[key])

    def resolve(
        self, template: str, channel: str, locale: str | None, center_code: str, center_locale: str
    ) -> str:
        """The template file to use: center override, then global, per locale in fallback order.

        A plugin that ships only SMS texts still reaches customers who prefer WhatsApp or
        e-mail: those channels fall back to the SMS template in the same locale.
        """
        return self.within_batch(
            ("resolve", template, channel, locale, center_code, center_locale),
            lambda: self._resolve(template, channel, locale, center_code, center_locale),
        )

    def _resolve(
        self, template: str, channel: str, locale: str | None, center_code: str, center_locale: str
    ) -> str:
        env = self.env_for(center_code)
        tried = []
        for loc in locale_chain(locale, center_locale):
            for candidate_channel in (channel, *TEXT_FALLBACK.get(channel, ())):
                for prefix in (f"centers/{center_code}/", ""):
                    name = f"{prefix}{template}/{candidate_channel}.{loc}.j2"
                    tried.append(name)
                    try:
                        env.get_template(name)
                    except TemplateNotFound:
                        continue
                    except TemplateSyntaxError as exc:
                        raise TemplateError(_describe(exc, name)) from None
                    return name
        raise TemplateError(f"no template for {template!r} on {channel}; looked for: {', '.join(tried)}")

    def render(
        self,
        template: str,
        channel: str,
        *,
        locale: str | None,
        center_code: str,
        center_locale: str,
        variables: Mapping[str, Any],
        marketing: bool = False,
    ) -> Rendered:
        """Render one message; any failure is a ``TemplateError`` naming template, line and cause."""
        name = self.resolve(template, channel, locale, center_code, center_locale)
        return self.render_name(
            name, channel, center_code=center_code, variables=variables, marketing=marketing
        )

    def render_name(
        self,
        name: str,
        channel: str,
        *,
        center_code: str,
        variables: Mapping[str, Any],
        marketing: bool = False,
        allow_empty: bool = False,
    ) -> Rendered:
        """Render the template called ``name`` for ``center_code`` ("" for none), as a send would.

        Text, subject and HTML part count against one render budget (careflow.rendering.sandbox).
        """
        used_locale = name.rsplit(".", 2)[-2]
        values = {**variables, "locale": used_locale}
        with render_budget():
            env = self.env_for(center_code)
            with _reported(env, name):
                tpl = env.get_template(name)
                context = tpl.new_context(values)
                # Blocks called directly, so that an e-mail's subject and body come from one template.
                subject = joined(tpl.blocks["subject"](context)).strip() if "subject" in tpl.blocks else None
                body = joined(
                    tpl.blocks["body"](context) if "body" in tpl.blocks else tpl.root_render_func(context)
                )
            body = body.strip()
            if not body and not allow_empty:
                raise TemplateError(f"{name}: rendered an empty message")
            if len(body) > MAX_OUTPUT_CHARS:
                raise TemplateError(
                    f"{name}: rendered {len(body)} characters, more than the limit of {MAX_OUTPUT_CHARS}"
                )
            if marketing and channel in ("sms", "whatsapp"):
                body = with_opt_out_footer(body, used_locale)
            html = (
                _render_html(self.env_for(center_code, html=True), name, values)
                if channel == "email"
                else None
            )
        return Rendered(body=body, subject=subject, template_name=name, locale=used_locale, html=html)


class _Drafts(BaseLoader):
    """Unsaved texts by name; each "file" is its name, so errors point at the draft's lines."""

    def __init__(self, sources: Mapping[str, str]) -> None:
        self.sources = dict(sources)

    def get_source(self, environment: Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        if template not in self.sources:
            raise TemplateNotFound(template)
        return self.sources[template], template, lambda: True  # a draft store lives for one render

    def list_templates(self) -> list[str]:
        return sorted(self.sources)


def _environment(loader: BaseLoader, *, autoescape: bool) -> BudgetedSandbox:
    env = BudgetedSandbox(loader, autoescape=autoescape)
    env.filters.update(CAREFLOW_FILTERS)
    return env


# What a template can do wrong while rendering; anything else is careflow's own failure.
_RENDER_ERRORS = (
    TemplateSyntaxError,
    TemplateNotFound,  # an include of a missing template, or of another center's (ForeignTemplate)
    TemplateRuntimeError,
    UndefinedError,
    SecurityError,  # the sandbox, and RenderBudgetExceeded
    TypeError,
    ValueError,
    ArithmeticError,
)


@contextmanager
def _reported(env: Environment, name: str) -> Iterator[None]:
    """Jinja's errors inside as a ``TemplateError`` naming ``name``, the line and the cause."""
    try:
        try:
            yield
        except RecursionError:
            # An include that includes itself; macros are stopped earlier (MAX_CALL_DEPTH).
            raise RenderBudgetExceeded("includes or calls itself without end") from None
        except Exception:
            # Blocks called directly skip Template.render's traceback rewriting, without which
            # error lines would be lines of the compiled Python, not of the template.
            env.handle_exception()
    except _RENDER_ERRORS as exc:
        cls = TemplateBudgetError if isinstance(exc, RenderBudgetExceeded) else TemplateError
        line, cause = _cause(exc, name)
        raise cls(_describe(exc, name), line=line, cause=cause) from None


def _render_html(env: Environment, name: str, variables: Mapping[str, Any]) -> str:
    """The HTML part: an ``html`` block if the template has one, else the body as paragraphs."""
    with _reported(env, name):
        tpl = env.get_template(name)
        context = tpl.new_context(dict(variables))
        block = "html" if "html" in tpl.blocks else "body" if "body" in tpl.blocks else None
        markup = joined(tpl.blocks[block](context) if block else tpl.root_render_func(context))
    if block == "html":
        return markup.strip()
    # Text written for both parts: blank lines separate paragraphs, newlines break lines.
    # The text is already escaped, so only these tags are markup.
    paragraphs = [p.strip() for p in markup.strip().split("\n\n") if p.strip()]
    return "\n".join("<p>" + p.replace("\n", "<br>\n") + "</p>" for p in paragraphs)


def with_opt_out_footer(body: str, locale: str) -> str:
    """Append the locale's opt-out instruction unless the template already carries it."""
    footer = OPT_OUT_FOOTERS.get(locale) or OPT_OUT_FOOTERS.get(locale.split("_")[0]) or OPT_OUT_FOOTERS["en"]
    if footer in body:
        return body
    separator = "" if locale.startswith("zh") else " "
    return f"{body}{separator}{footer}"


def _template_line(exc: BaseException, name: str) -> int | None:
    if isinstance(exc, TemplateSyntaxError):
        return exc.lineno
    tb: types.TracebackType | None = exc.__traceback__
    line = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(name) or filename.endswith(".j2"):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _describe(exc: BaseException, name: str) -> str:
    line, cause = _cause(exc, name)
    where = f"{name} line {line}" if line else name
    return f"{where}: {cause}"


def _cause(exc: BaseException, name: str) -> tuple[int | None, str]:
    """(template line or None, "kind: message") for an error raised while loading or rendering."""
    kind = {
        TemplateSyntaxError: "syntax error",
        UndefinedError: "undefined variable",
        SecurityError: "not allowed in templates",
        RenderBudgetExceeded: "render budget exceeded",
        ForeignTemplate: "another center's template",
        TemplateNotFound: "template not found",
    }.get(type(exc), type(exc).__name__)
    message = exc.message if isinstance(exc, TemplateSyntaxError) and exc.message else str(exc)
    return _template_line(exc, name), f"{kind}: {message}"
