"""docs/plugins.md stays true to careflow/hookspecs.py (after datasette's tests/test_docs.py).

Every hook found in ``careflow.hookspecs`` (new ones included, automatically) must have a
docstring, a heading in the hook reference with its exact argument names, and a working
example in docs/hook_examples/; and the generated section must be current.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from careflow.devtools import hookdocs
from careflow.hookspecs import hookimpl
from careflow.plugin_manager import make_plugin_manager
from careflow.testing import Factories, run_care_day
from careflow.testing.fixtures import RuntimeFactory

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"
EXAMPLES = DOC.parent / hookdocs.EXAMPLES_DIRNAME
REGENERATE = "run: python -m careflow.devtools.hookdocs"
HOOKS = hookdocs.hook_functions()


def _documented_headings() -> dict[str, str]:
    """Hook name -> the argument list its heading in docs/plugins.md shows."""
    return dict(re.findall(r"^### `(careflow_\w+)\((.*)\)`$", DOC.read_text("utf-8"), flags=re.MULTILINE))


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"hook_example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hooks_are_found() -> None:
    names = {fn.__name__ for fn in HOOKS}
    assert {"careflow_care_plugins", "careflow_channel_providers", "careflow_template_dirs"} <= names


@pytest.mark.parametrize("hook", HOOKS, ids=lambda fn: fn.__name__)
def test_every_hook_has_a_docstring(hook: Callable[..., Any]) -> None:
    doc = hookdocs.describe(hook).docstring
    assert doc, f"{hook.__name__} in careflow/hookspecs.py has no docstring: say when it is called and why"


@pytest.mark.parametrize("hook", HOOKS, ids=lambda fn: fn.__name__)
def test_every_hook_is_documented_with_its_signature(hook: Callable[..., Any]) -> None:
    headings = _documented_headings()
    described = hookdocs.describe(hook)
    assert hook.__name__ in headings, f"{hook.__name__} is missing from docs/plugins.md; {REGENERATE}"
    shown = [a.strip() for a in headings[hook.__name__].split(",") if a.strip()]
    assert shown == list(described.args), (
        f"docs/plugins.md shows {hook.__name__}({', '.join(shown)}) but the spec is "
        f"{hook.__name__}({', '.join(described.args)}); {REGENERATE}"
    )


def test_no_documented_hook_is_gone() -> None:
    gone = set(_documented_headings()) - {fn.__name__ for fn in HOOKS}
    assert not gone, f"docs/plugins.md documents hooks that no longer exist: {sorted(gone)}; {REGENERATE}"


@pytest.mark.parametrize("hook", HOOKS, ids=lambda fn: fn.__name__)
def test_every_hook_has_an_example_that_implements_it(hook: Callable[..., Any]) -> None:
    path = EXAMPLES / f"{hook.__name__}.py"
    assert path.exists(), f"{hook.__name__} has no example: add docs/hook_examples/{path.name}"
    pm = make_plugin_manager()
    # pluggy checks the implementation's name and argument names against the spec here.
    pm.register(_load(path))
    pm.check_pending()
    implemented = [impl.plugin_name for impl in getattr(pm.hook, hook.__name__).get_hookimpls()]
    assert implemented, f"docs/hook_examples/{path.name} does not implement {hook.__name__}"


def test_the_generated_reference_is_current() -> None:
    text = DOC.read_text("utf-8")
    current = hookdocs.rewritten(text, hookdocs.render(EXAMPLES))
    assert text == current, f"docs/plugins.md is out of date; {REGENERATE}"


def test_the_generator_rewrites_only_its_section(tmp_path: Path) -> None:
    page = tmp_path / "plugins.md"
    page.write_text(f"# Intro\n\nkept\n\n{hookdocs.START}\nstale\n{hookdocs.END}\n\n## After\n", "utf-8")
    (tmp_path / hookdocs.EXAMPLES_DIRNAME).mkdir()

    assert hookdocs.main([str(page), "--check"]) == 1
    assert hookdocs.main([str(page)]) == 0
    assert hookdocs.main([str(page), "--check"]) == 0
    text = page.read_text("utf-8")
    assert text.startswith("# Intro\n\nkept\n\n") and text.endswith(f"{hookdocs.END}\n\n## After\n")
    assert "stale" not in text and "### `careflow_care_plugins()`" in text
    assert "**No example yet** (add `hook_examples/careflow_care_plugins.py`)." in text


def test_the_care_plugin_example_works(
    careflow_make_runtime: RuntimeFactory, careflow_factories: Factories, tmp_path: Path
) -> None:
    """The reference's main example is a working plugin, not just a valid signature."""
    example = _load(EXAMPLES / "careflow_care_plugins.py")
    (tmp_path / "car_anniversary").mkdir()
    template = tmp_path / "car_anniversary" / "sms.en.j2"
    template.write_text("{{ plate }}: {{ years }} years together!", "utf-8")

    class Templates:
        @hookimpl
        def careflow_template_dirs(self) -> list[Path]:
            return [tmp_path]

    runtime = careflow_make_runtime(
        plugins={"car_anniversary": {"min_years": 2}},
        extra_plugins=[example, Templates()],
        centers={"main": {"timezone": "Europe/London", "locale": "en"}},
    )
    old, new = careflow_factories.customer("old"), careflow_factories.customer("new")
    careflow_factories.vehicle(old, plate="AB12 CDE", purchase_date=date(2023, 6, 1))
    careflow_factories.vehicle(new, plate="XY25 ZZZ", purchase_date=date(2025, 6, 1))

    sent = run_care_day(runtime, now=datetime.fromisoformat("2026-06-01T10:00:00+01:00"))

    assert [(m.customer, m.body) for m in sent] == [
        ("old", "AB12 CDE: 3 years together! Reply STOP to opt out")
    ]
