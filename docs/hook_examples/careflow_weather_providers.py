import json
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from careflow import PluginSettings, WeatherProvider, hookimpl


class BureauFileProvider(WeatherProvider):
    """Alerts the local meteorological bureau sends the center, saved as alerts/<city>/<date>.json."""

    name = "bureau_files"  # [plugins.weather] provider = "bureau_files"

    def __init__(self, root: Path = Path("alerts")) -> None:
        self.root = root

    def alerts(self, city: str, day: date, settings: PluginSettings) -> list[Mapping[str, Any]]:
        path = self.root / city / f"{day.isoformat()}.json"
        if not path.exists():
            return []
        alerts: list[Mapping[str, Any]] = json.loads(path.read_text("utf-8"))
        return alerts  # e.g. [{"id": "SH-2026-0712-typhoon", "kind": "typhoon"}]


@hookimpl
def careflow_weather_providers() -> list[WeatherProvider]:
    return [BureauFileProvider()]
