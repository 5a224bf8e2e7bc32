"""Which templates a render may reach: its center's overrides, the global ones and the shipped texts.

Template names share one namespace (``centers/<code>/…`` beside the global names) and one
loader chain, so without a fence ``{% include 'centers/<other>/…' %}`` would read, and send,
another center's text. ``CenterScopedLoader`` is that fence: every render for a center goes
through one (careflow.rendering.store.TemplateStore.env_for), so includes, imports and extends,
from files or from versions published in the console, see only what that center may use.
"""

from __future__ import annotations

from collections.abc import Callable

from jinja2 import BaseLoader, Environment, TemplateNotFound

CENTERS = "centers"


def _pieces(name: str) -> list[str]:
    # The way Jinja's file loader splits names: "./centers//x" is "centers/x" to it.
    return [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]


def scope_of(name: str) -> str:
    """The center code a template name belongs to, or "" for a global (or shipped) name."""
    pieces = _pieces(name)
    if len(pieces) > 1 and pieces[0].lower() == CENTERS:
        return pieces[1]
    return ""


def may_use(scope: str, name: str) -> bool:
    """Whether a render for ``scope`` (a center code, "" for none) may load template ``name``."""
    return scope_of(name) in ("", scope)


def refusal(scope: str, name: str) -> str:
    """Why ``name`` is out of reach for ``scope``, in words a marketer can act on."""
    owner = scope_of(name)
    allowed = (
        f"its own (centers/{scope}/…), global and shipped templates"
        if scope
        else "global and shipped templates"
    )
    whose = f"center {scope}'s template" if scope else "a global template"
    return f"'{name}' belongs to center {owner}; {whose} may use only {allowed}"


class ForeignTemplate(TemplateNotFound):
    """A template of another center: to this render it does not exist, and the error says why."""

    def __init__(self, scope: str, name: str) -> None:
        super().__init__(name, refusal(scope, name))


class CenterScopedLoader(BaseLoader):
    """``loader`` as one center (or, with scope "", no center) may see it."""

    def __init__(self, loader: BaseLoader, scope: str) -> None:
        self.loader = loader
        self.scope = scope

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        if not may_use(self.scope, template):
            raise ForeignTemplate(self.scope, template)
        return self.loader.get_source(environment, template)

    def list_templates(self) -> list[str]:
        return [name for name in self.loader.list_templates() if may_use(self.scope, name)]
