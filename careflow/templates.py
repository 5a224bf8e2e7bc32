"""Marketer-edited message templates: sandboxed, strict, locale-aware, with clear errors."""

from __future__ import annotations

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
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    pass_context,
)
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from careflow.errors import TemplateError
from careflow.template_db import DatabaseTemplates, PublishedFirstLoader

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
    """Finds templates through the loader chain and renders them in the sandbox."""

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
        # Versions published in the console come before every file (see careflow.template_db).
        self.env = ImmutableSandboxedEnvironment(
            loader=PublishedFirstLoader(database, files) if database is not None else files,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            autoescape=False,
        )
        self.env.filters.update(CAREFLOW_FILTERS)
        # E-mail's HTML part: the same files and filters, every variable HTML-escaped.
        self.html_env = ImmutableSandboxedEnvironment(
            loader=self.env.loader,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            autoescape=True,
        )
        self.html_env.filters.update(CAREFLOW_FILTERS)

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
        tried = []
        for loc in locale_chain(locale, center_locale):
            for candidate_channel in (channel, *TEXT_FALLBACK.get(channel, ())):
                for prefix in (f"centers/{center_code}/", ""):
                    name = f"{prefix}{template}/{candidate_channel}.{loc}.j2"
                    tried.append(name)
                    try:
                        self.env.get_template(name)
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
        used_locale = name.rsplit(".", 2)[-2]
        try:
            tpl = self.env.get_template(name)
            context = tpl.new_context({**variables, "locale": used_locale})
            subject = None
            body = None
            try:
                if "subject" in tpl.blocks:
                    subject = "".join(tpl.blocks["subject"](context)).strip()
                if "body" in tpl.blocks:
                    body = "".join(tpl.blocks["body"](context))
            except Exception:
                # Blocks called directly skip Template.render's traceback rewriting, without
                # which error lines would be lines of the compiled Python, not of the template.
                self.env.handle_exception()
            if body is None:
                body = tpl.render({**variables, "locale": used_locale})
        except TemplateError:
            raise
        except (
            TemplateSyntaxError,
            UndefinedError,
            SecurityError,
            TypeError,
            ValueError,
            ArithmeticError,
        ) as exc:
            raise TemplateError(_describe(exc, name)) from None
        body = body.strip()
        if not body:
            raise TemplateError(f"{name}: rendered an empty message")
        if len(body) > MAX_OUTPUT_CHARS:
            raise TemplateError(
                f"{name}: rendered {len(body)} characters, more than the limit of {MAX_OUTPUT_CHARS}"
            )
        if marketing and channel in ("sms", "whatsapp"):
            body = with_opt_out_footer(body, used_locale)
        html = self._render_html(name, {**variables, "locale": used_locale}) if channel == "email" else None
        return Rendered(body=body, subject=subject, template_name=name, locale=used_locale, html=html)

    def _render_html(self, name: str, variables: Mapping[str, Any]) -> str:
        """The HTML part: an ``html`` block if the template has one, else the body as paragraphs."""
        try:
            tpl = self.html_env.get_template(name)
            context = tpl.new_context(dict(variables))
            block = "html" if "html" in tpl.blocks else "body" if "body" in tpl.blocks else None
            try:
                markup = "".join(tpl.blocks[block](context)) if block else tpl.render(dict(variables))
            except Exception:
                self.html_env.handle_exception()
        except (TemplateSyntaxError, UndefinedError, SecurityError, TypeError, ValueError) as exc:
            raise TemplateError(_describe(exc, name)) from None
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
    line = _template_line(exc, name)
    where = f"{name} line {line}" if line else name
    kind = {
        TemplateSyntaxError: "syntax error",
        UndefinedError: "undefined variable",
        SecurityError: "not allowed in templates",
    }.get(type(exc), type(exc).__name__)
    message = exc.message if isinstance(exc, TemplateSyntaxError) and exc.message else str(exc)
    return f"{where}: {kind}: {message}"
