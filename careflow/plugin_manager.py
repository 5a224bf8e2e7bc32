"""The plugin manager: built-ins and third-party packages load through the same pluggy path."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import pluggy
from pydantic import ValidationError

from careflow import hookspecs
from careflow.care import CarePlugin, PluginSettings, priority_of
from careflow.compat import incompatibility
from careflow.config import Settings, format_validation_error
from careflow.errors import ConfigError

if TYPE_CHECKING:
    from careflow.channels.base import ChannelProvider

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "careflow"

# Core modules that implement hooks; registered exactly like plugins (after datasette).
DEFAULT_PLUGINS: tuple[str, ...] = (
    "careflow.channels.console",
    "careflow.channels.twilio_sms",
    "careflow.channels.smtp_email",
    "careflow.customers.segments",
)


@dataclass(frozen=True)
class LoadFailure:
    """A plugin package that could not be loaded; reported, and the others carry on."""

    name: str
    error: str


@dataclass
class PluginRegistry:
    """Everything the loaded plugins contributed, and what went wrong loading them."""

    pm: pluggy.PluginManager
    care_plugins: dict[str, CarePlugin] = field(default_factory=dict)
    providers: dict[str, ChannelProvider] = field(default_factory=dict)
    template_dirs: list[Path] = field(default_factory=list)
    failures: list[LoadFailure] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # care plugin name -> package / module
    distributions: dict[str, str] = field(default_factory=dict)  # entry point -> "dist-name version"

    def plugin_settings(self, settings: Settings) -> dict[str, PluginSettings]:
        """Validate every ``[plugins.<name>]`` section against its plugin's schema."""
        unknown = sorted(set(settings.plugins) - set(self.care_plugins))
        if unknown:
            known = ", ".join(sorted(self.care_plugins)) or "none"
            raise ConfigError(
                f"[plugins.{unknown[0]}]: no such care plugin is installed (installed: {known})"
            )
        validated: dict[str, PluginSettings] = {}
        for name, plugin in self.care_plugins.items():
            raw = settings.plugins.get(name, {})
            try:
                validated[name] = plugin.settings_model.model_validate(raw)
            except ValidationError as exc:
                raise ConfigError(format_validation_error(exc, f"[plugins.{name}]")) from None
        return validated

    def enabled(self, settings: Settings) -> dict[str, tuple[CarePlugin, PluginSettings]]:
        """The enabled care plugins with their validated settings, highest priority first."""
        checked = self.plugin_settings(settings)
        chosen = [(p, checked[n]) for n, p in self.care_plugins.items() if checked[n].enabled]
        chosen.sort(key=lambda pair: (-priority_of(*pair), pair[0].name))
        return {p.name: (p, s) for p, s in chosen}


def make_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("careflow")
    pm.add_hookspecs(hookspecs)
    return pm


def load_plugins(extra: list[object] | None = None, *, entry_points_too: bool = True) -> PluginRegistry:
    """Register core modules, every ``careflow`` entry point, and ``extra`` plugin objects."""
    pm = make_plugin_manager()
    registry = PluginRegistry(pm=pm)
    for module_name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
    if entry_points_too:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if pm.has_plugin(ep.name):
                continue
            try:
                loaded = ep.load()
                if _incompatible(registry, ep.name, loaded):
                    continue
                pm.register(loaded, name=ep.name)
                if ep.dist is not None:
                    registry.distributions[ep.name] = f"{ep.dist.name} {ep.dist.version}"
            except Exception as exc:  # a broken package must not take careflow down
                log.error("plugin %r (%s) failed to load: %s", ep.name, ep.value, exc)
                registry.failures.append(LoadFailure(ep.name, f"{type(exc).__name__}: {exc}"))
    for obj in extra or []:
        if not _incompatible(registry, _object_name(obj), obj):
            pm.register(obj)
    # A misspelled hook implementation is reported at start-up instead of silently never
    # running; the plugin that has it is not used (after tox's check_pending).
    _drop_unknown_hooks(registry)
    pm.check_pending()
    _collect(registry)
    return registry


def _drop_unknown_hooks(registry: PluginRegistry) -> None:
    pm = registry.pm
    known = sorted(name for name in vars(hookspecs) if name.startswith("careflow_"))
    for name, caller in list(vars(pm.hook).items()):
        if caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if not pm.is_registered(impl.plugin):
                continue
            source = _source_name(pm, impl.plugin)
            pm.unregister(impl.plugin)
            problem = f"implements {name}, which is not a careflow hook (known: {', '.join(known)})"
            log.error("plugin %r is not used: it %s", source, problem)
            registry.failures.append(LoadFailure(source, f"{problem}; the plugin is not used"))


def registry_from_manager(pm: pluggy.PluginManager) -> PluginRegistry:
    """A registry of what the plugins already registered on ``pm`` contribute (tests build these)."""
    pm.check_pending()
    registry = PluginRegistry(pm=pm)
    _collect(registry)
    return registry


def _object_name(obj: object) -> str:
    return obj.__name__ if isinstance(obj, ModuleType) else type(obj).__name__


def _incompatible(registry: PluginRegistry, name: str, plugin: object) -> bool:
    """Record (and log) a plugin that does not support this careflow; such a plugin is not used."""
    problem = incompatibility(plugin)
    if problem is None:
        return False
    log.error("plugin %r %s", name, problem)
    registry.failures.append(LoadFailure(name, problem))
    return True


def _source_name(pm: pluggy.PluginManager, impl_plugin: Any) -> str:
    name = pm.get_name(impl_plugin)
    if name and name != str(id(impl_plugin)):  # pluggy names unnamed plugins by their id()
        return name
    return impl_plugin.__name__ if isinstance(impl_plugin, ModuleType) else type(impl_plugin).__name__


def _collect(registry: PluginRegistry) -> None:
    pm = registry.pm
    for impl in pm.hook.careflow_care_plugins.get_hookimpls():
        source = _source_name(pm, impl.plugin)
        try:
            plugins = cast(list[object], impl.function() or [])
        except Exception as exc:
            registry.failures.append(
                LoadFailure(source, f"careflow_care_plugins raised {type(exc).__name__}: {exc}")
            )
            continue
        for plugin in plugins:
            if not isinstance(plugin, CarePlugin):
                registry.failures.append(
                    LoadFailure(source, f"returned {plugin!r}, which is not a CarePlugin")
                )
                continue
            if _incompatible(registry, f"{source} ({plugin.name})", plugin):
                continue
            if plugin.name in registry.care_plugins:
                first = registry.sources[plugin.name]
                registry.failures.append(
                    LoadFailure(source, f"care plugin name {plugin.name!r} is already taken by {first}")
                )
                continue
            registry.care_plugins[plugin.name] = plugin
            registry.sources[plugin.name] = source
    for providers in pm.hook.careflow_channel_providers():
        for provider in providers or []:
            # Hooks run last-registered first, so an outside plugin overrides a built-in.
            registry.providers.setdefault(provider.name, provider)
    for dirs in pm.hook.careflow_template_dirs():
        registry.template_dirs.extend(Path(d) for d in dirs or [])
