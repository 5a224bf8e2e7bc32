"""The sandbox every template renders in: Jinja's immutable sandbox plus a budget per render.

The sandbox stops a template from reaching Python's internals, not from working forever: two
loops over a long string, or a macro that calls itself, used to take a preview ten seconds
and a send minutes. Every render now has a budget: loop iterations and calls (``MAX_STEPS``),
wall time (``MAX_SECONDS``, checked every few hundred steps), characters of output
(``MAX_RENDER_CHARS``) and the size of what ``*`` may build. Exceeding it raises
``RenderBudgetExceeded``, which careflow.rendering.store reports as a ``TemplateBudgetError`` naming
the template. Counting is a few attribute updates per loop iteration; nothing per render but a
context variable, so the thousands of renders of a delivery run stay as fast as before.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from jinja2 import BaseLoader, StrictUndefined, Template, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_STEPS = 20_000  # loop iterations plus calls (macros, methods, range) in one render
MAX_CALL_DEPTH = 40  # macros calling macros; far below Python's recursion limit
MAX_SECONDS = 2.0  # wall time of one render, checked every _CLOCK_EVERY steps
MAX_RENDER_CHARS = 100_000  # output of one render; a message is much shorter (see MAX_OUTPUT_CHARS)
_CLOCK_EVERY = 256
T = TypeVar("T")


class RenderBudgetExceeded(SecurityError):
    """A render did more work than any message needs: a loop bomb, runaway recursion or output."""


@dataclass(slots=True)
class _Budget:
    deadline: float
    steps: int = 0
    depth: int = 0
    next_check: int = _CLOCK_EVERY  # the step at which _check looks at the limits again


_current: ContextVar[_Budget | None] = ContextVar("careflow_render_budget", default=None)


@contextmanager
def render_budget() -> Iterator[None]:
    """One budget for everything rendered inside: blocks, includes, macros, the HTML part.

    Nested uses share the outermost budget, so a render cannot reset its own count.
    """
    if _current.get() is not None:
        yield
        return
    token = _current.set(_Budget(time.monotonic() + MAX_SECONDS))
    try:
        yield
    finally:
        _current.reset(token)


def _spend() -> _Budget | None:
    """Count one step against the current render's budget (None when no budget is open)."""
    budget = _current.get()
    if budget is not None:
        budget.steps += 1
        if budget.steps >= budget.next_check:
            _check(budget)
    return budget


def _check(budget: _Budget) -> None:
    if budget.steps > MAX_STEPS:
        raise RenderBudgetExceeded(
            f"more than {MAX_STEPS:,} loop iterations and calls in one render (a loop inside a loop?)"
        )
    if time.monotonic() > budget.deadline:
        raise RenderBudgetExceeded(f"rendering took more than {MAX_SECONDS:g} s")
    budget.next_check = min(budget.steps + _CLOCK_EVERY, MAX_STEPS + 1)


def joined(chunks: Iterable[str]) -> str:
    """``"".join(chunks)``, stopped as soon as the output passes ``MAX_RENDER_CHARS``."""
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_RENDER_CHARS:
            raise RenderBudgetExceeded(f"more than {MAX_RENDER_CHARS:,} characters of output")
        parts.append(chunk)
    return "".join(parts)


class _BudgetCodeGenerator(CodeGenerator):
    """Jinja's code generator, with every loop's iterable counted item by item.

    The sandbox sees attribute look-ups and calls but not iteration: ``{% for a in s %}{% for
    b in s %}{% endfor %}{% endfor %}`` would run without ever asking it. Each ``for`` iterates
    ``environment.careflow_iter(<iterable>)`` instead, which counts the items a loop takes,
    those its ``if`` filter skips included. Written as plain Python, not as a template call,
    which would cost a sandbox check per loop (Jinja allows no new node types).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop_iterables: set[int] = set()

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        self._loop_iterables.add(id(node.iter))
        super().visit_For(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) not in self._loop_iterables:
            return super().visit(node, *args, **kwargs)
        self.write("environment.careflow_iter(")
        super().visit(node, *args, **kwargs)
        self.write(")")
        return None


class BudgetedTemplate(Template):
    """A template whose plain ``render()`` also counts against a budget and caps its output."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        ctx = self.new_context(dict(*args, **kwargs))
        with render_budget():
            try:
                return joined(self.root_render_func(ctx))
            except Exception:
                self.environment.handle_exception()


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, strict about undefined names, with every render on a budget."""

    code_generator_class = _BudgetCodeGenerator
    template_class = BudgetedTemplate
    # ``"x" * 10**9`` and ``10 ** 10**8`` are single operations: checked before they run.
    intercepted_binops: ClassVar[frozenset[str]] = frozenset({"*", "**"})  # type: ignore[misc]

    def __init__(self, loader: BaseLoader | None, *, autoescape: bool) -> None:
        super().__init__(
            loader=loader,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            autoescape=autoescape,
        )

    @staticmethod
    def careflow_iter(iterable: Iterable[T]) -> Iterator[T]:
        """The items of a loop, each one a step of the budget (called from compiled templates)."""
        budget = _current.get()
        if budget is None:  # rendered outside render_budget(): BudgetedTemplate.render opens one
            yield from iterable
            return
        for item in iterable:
            budget.steps += 1  # _spend(), inlined: this runs for every item of every loop
            if budget.steps >= budget.next_check:
                _check(budget)
            yield item

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Every call from a template is a step; macros calling macros are limited in depth."""
        budget = _spend()
        if budget is None:
            return super().call(__context, __obj, *args, **kwargs)
        if budget.depth >= MAX_CALL_DEPTH:
            raise RenderBudgetExceeded(
                f"calls nested more than {MAX_CALL_DEPTH} deep (a macro that calls itself without end?)"
            )
        budget.depth += 1
        try:
            return super().call(__context, __obj, *args, **kwargs)
        finally:
            budget.depth -= 1

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > MAX_RENDER_CHARS
                ):
                    raise RenderBudgetExceeded(
                        f"'*' would build {len(seq) * times:,} items; at most {MAX_RENDER_CHARS:,}"
                    )
        elif isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 1_000:
            raise RenderBudgetExceeded(f"'**' with an exponent of {right:,}; at most 1,000")
        return super().call_binop(context, operator, left, right)
