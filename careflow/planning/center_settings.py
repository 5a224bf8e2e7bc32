"""Per-center care plugin settings: a center's own choices (set in the console) over careflow.toml.

Precedence, highest first: the center's row in ``center_plugin_settings`` (only the keys it
sets), then ``[plugins.<name>]`` in careflow.toml / ``CAREFLOW_PLUGINS__…``, then the
plugin's schema defaults. The planner plans each plugin once per distinct effective
settings and keeps only the occasions of the centers those settings belong to.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from careflow.care import CarePlugin, PluginSettings, priority_of
from careflow.config import Settings
from careflow.plugin_manager import PluginRegistry
from careflow.storage.models import Center, CenterPluginSetting

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginPass:
    """One care plugin with one set of settings, planned in one pass for some centers (None: all)."""

    plugin: CarePlugin
    settings: PluginSettings
    center_ids: frozenset[int] | None


def center_settings(
    plugin: CarePlugin, configured: Mapping[str, Any], override: Mapping[str, Any] | None
) -> PluginSettings:
    """The settings in force for one center; raises ``ValidationError`` for a bad override."""
    return plugin.settings_model.model_validate({**configured, **(override or {})})


def load_overrides(session: Session) -> dict[tuple[int, str], dict[str, Any]]:
    """(center id, plugin) -> the keys that center set."""
    rows = session.scalars(select(CenterPluginSetting))
    return {(row.center_id, row.plugin): dict(row.settings or {}) for row in rows}


def effective_settings(
    registry: PluginRegistry, settings: Settings, session: Session
) -> dict[int, dict[str, PluginSettings]]:
    """center id -> plugin name -> settings in force there."""
    registry.plugin_settings(settings)  # careflow.toml itself must be valid: ConfigError names the key
    overrides = load_overrides(session)
    result: dict[int, dict[str, PluginSettings]] = {}
    for center_id in session.scalars(select(Center.id).order_by(Center.id)):
        per_plugin: dict[str, PluginSettings] = {}
        for name, plugin in registry.care_plugins.items():
            configured = settings.plugins.get(name, {})
            override = overrides.get((center_id, name))
            try:
                per_plugin[name] = center_settings(plugin, configured, override)
            except ValidationError as exc:
                # A stored override the plugin no longer accepts (it changed its schema) must
                # not stop every other center's care: fall back to careflow.toml and say so.
                log.error(
                    "center %s, plugin %s: stored console settings are invalid, using careflow.toml: %s",
                    center_id,
                    name,
                    exc,
                )
                per_plugin[name] = center_settings(plugin, configured, None)
        result[center_id] = per_plugin
    return result


def plugin_passes(registry: PluginRegistry, settings: Settings, session: Session) -> list[PluginPass]:
    """The enabled (plugin, settings, centers) combinations to plan, highest priority first."""
    per_center = effective_settings(registry, settings, session)
    all_centers = frozenset(per_center)
    runs: list[PluginPass] = []
    for name, plugin in registry.care_plugins.items():
        groups: dict[str, tuple[PluginSettings, set[int]]] = {}
        for center_id, chosen in per_center.items():
            entry = groups.setdefault(chosen[name].model_dump_json(), (chosen[name], set()))
            entry[1].add(center_id)
        for chosen_settings, centers in groups.values():
            if not chosen_settings.enabled:
                continue
            ids = frozenset(centers)
            runs.append(PluginPass(plugin, chosen_settings, None if ids == all_centers else ids))
    runs.sort(key=lambda run: (-priority_of(run.plugin, run.settings), run.plugin.name))
    return runs
