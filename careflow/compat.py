"""Which careflow versions a plugin supports: checked at start-up, before the plugin is used.

A plugin module (or its ``CarePlugin`` class) may declare ``careflow_requires``, a PEP 440
specifier such as ``">=0.1,<0.2"``. A plugin that does not support the running careflow is
not registered; the reason is reported as a load failure naming the plugin.
"""

from __future__ import annotations

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from careflow.hookspecs import HOOKSPEC_VERSION
from careflow.version import __version__

REQUIRES_ATTRIBUTE = "careflow_requires"


def declared_requirement(plugin: object) -> str | None:
    """The ``careflow_requires`` text a module, class or instance declares, if any."""
    value = getattr(plugin, REQUIRES_ATTRIBUTE, None)
    return value if value is None or isinstance(value, str) else repr(value)


def incompatibility(plugin: object, *, version: str = __version__) -> str | None:
    """Why ``plugin`` cannot run on careflow ``version``, or None when it can (or says nothing)."""
    requires = declared_requirement(plugin)
    if requires is None:
        return None
    try:
        spec = SpecifierSet(requires)
    except InvalidSpecifier:
        return (
            f"declares {REQUIRES_ATTRIBUTE} = {requires!r}, which is not a version specifier "
            "(expected something like '>=0.1,<0.2')"
        )
    if spec.contains(Version(version), prereleases=True):
        return None
    return (
        f"needs careflow {requires}, but this is careflow {version} (hook spec version "
        f"{HOOKSPEC_VERSION}); the plugin is not used. Install a release of the plugin made "
        f"for careflow {version}, or a careflow version the plugin supports"
    )
