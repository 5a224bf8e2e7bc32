"""``careflow plugin new``: a separate, installable care plugin package that passes its own tests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template

from packaging.version import Version

from careflow.errors import CareflowError
from careflow.version import __version__

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
MAX_NAME = 40


@dataclass(frozen=True)
class PluginNames:
    """Every name the package needs, derived from the one the developer typed."""

    plugin: str  # care plugin name, entry point, config section, template directory: oil_change
    dist: str  # distribution: careflow-oil-change
    module: str  # import package: careflow_oil_change
    cls: str  # class prefix: OilChange
    title: str  # human title: Oil change

    @classmethod
    def from_name(cls, name: str) -> PluginNames:
        if not NAME_PATTERN.match(name) or len(name) > MAX_NAME:
            raise CareflowError(
                f"plugin name {name!r}: use lower-case letters and digits separated by '-' or '_', "
                f"starting with a letter, at most {MAX_NAME} characters (e.g. 'oil-change')"
            )
        words = re.split(r"[-_]", name.removeprefix("careflow-").removeprefix("careflow_"))
        plugin = "_".join(words)
        return cls(
            plugin=plugin,
            dist="careflow-" + "-".join(words),
            module="careflow_" + plugin,
            cls="".join(w.capitalize() for w in words),
            title=" ".join(words).capitalize(),
        )


def careflow_requires(version: str = __version__) -> str:
    """The careflow versions a new plugin should claim: this minor series (0.x) or major (1+)."""
    release = Version(version).release
    major, minor = release[0], release[1] if len(release) > 1 else 0
    if major == 0:
        return f">={major}.{minor},<{major}.{minor + 1}"
    return f">={major}.{minor},<{major + 1}"


def _layout(names: PluginNames) -> dict[str, str]:
    """Generated path -> template file in ``scaffold_files``."""
    src = f"src/{names.module}"
    return {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        f"{src}/__init__.py": "__init__.py.tmpl",
        f"{src}/plugin.py": "plugin.py.tmpl",
        f"{src}/py.typed": "",
        f"{src}/templates/{names.plugin}/sms.en.j2": "sms.en.j2.tmpl",
        f"{src}/templates/{names.plugin}/sms.zh_CN.j2": "sms.zh_CN.j2.tmpl",
        "tests/test_plugin.py": "test_plugin.py.tmpl",
    }


def create_plugin_package(name: str, directory: Path | None = None) -> tuple[PluginNames, Path, list[Path]]:
    """Write the package for plugin ``name`` into ``directory`` (default ./careflow-<name>)."""
    names = PluginNames.from_name(name)
    target = directory or Path.cwd() / names.dist
    if target.exists() and any(target.iterdir()):
        raise CareflowError(f"{target} exists and is not empty; choose another --dir or remove it")
    values = {
        "plugin": names.plugin,
        "dist": names.dist,
        "module": names.module,
        "cls": names.cls,
        "title": names.title,
        "careflow_requires": careflow_requires(),
    }
    source = files("careflow.devtools") / "scaffold_files"
    written = []
    for relative, template in _layout(names).items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        text = Template((source / template).read_text("utf-8")).substitute(values) if template else ""
        path.write_text(text, "utf-8")
        written.append(path)
    return names, target, written
