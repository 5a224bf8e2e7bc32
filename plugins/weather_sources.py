"""Weather providers shipped with careflow: Open-Meteo's daily forecast, and a bureau alert file.

Both return alerts as dicts ``{"id", "kind", "day", "ends", "headline"}``; ``kind`` is one of
``WEATHER_KINDS``, ``day`` and ``ends`` the weather's first and last day. They raise
``WeatherProviderError`` with a clear message on any failure.
"""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from careflow import PluginSettings, WeatherProvider, canonical_city, city_named

WEATHER_KINDS = ("typhoon", "rainstorm", "snow", "cold_wave", "heat", "hail", "strong_wind")
DAILY_FIELDS = (
    "weather_code",
    "temperature_2m_max",
    "temperature_2m_min",
    "precipitation_sum",
    "snowfall_sum",
    "wind_gusts_10m_max",
)


class WeatherProviderError(Exception):
    """A provider could not answer; weather care for that city is skipped and the reason reported."""


class Thresholds(BaseModel):
    """When a forecast day counts as special weather (defaults follow China's warning criteria)."""

    model_config = ConfigDict(extra="forbid")

    rainstorm_mm: float = Field(default=50, gt=0)  # 暴雨: 50 mm in 24 h
    snow_cm: float = Field(default=5, gt=0)  # snowfall_sum is in cm
    heat_c: float = Field(default=35)  # 高温: 35 °C
    cold_wave_min_c: float = Field(default=4)  # 寒潮: minimum at or below 4 °C ...
    cold_wave_drop_c: float = Field(default=8, gt=0)  # ... after a drop of 8 °C from the day before
    strong_wind_gust_kmh: float = Field(default=62, gt=0)  # Beaufort 8 (gale)
    typhoon_gust_kmh: float = Field(default=118, gt=0)  # Beaufort 12 (typhoon force)
    rainstorm_codes: list[int] = Field(default_factory=lambda: [65, 82])  # WMO: heavy rain, violent showers
    snow_codes: list[int] = Field(default_factory=lambda: [75, 86])  # WMO: heavy snow, heavy snow showers
    hail_codes: list[int] = Field(default_factory=lambda: [96, 99])  # WMO: thunderstorm with hail


def _settings_value(settings: PluginSettings, name: str) -> Any:
    value = getattr(settings, name, None)
    if value is None:
        raise WeatherProviderError(f"[plugins.weather] {name} is not set")
    return value


def kinds_on(
    day: Mapping[str, float | None], previous: Mapping[str, float | None] | None, t: Thresholds
) -> list[str]:
    """The special-weather kinds one forecast day shows."""
    found = []
    code = day.get("weather_code")
    gust = day.get("wind_gusts_10m_max")
    rain = day.get("precipitation_sum")
    snow = day.get("snowfall_sum")
    tmax, tmin = day.get("temperature_2m_max"), day.get("temperature_2m_min")
    if gust is not None and gust >= t.typhoon_gust_kmh:
        found.append("typhoon")
    elif gust is not None and gust >= t.strong_wind_gust_kmh:
        found.append("strong_wind")
    if (rain is not None and rain >= t.rainstorm_mm) or code in t.rainstorm_codes:
        found.append("rainstorm")
    if (snow is not None and snow >= t.snow_cm) or code in t.snow_codes:
        found.append("snow")
    if code in t.hail_codes:
        found.append("hail")
    if tmax is not None and tmax >= t.heat_c:
        found.append("heat")
    prev_min = previous.get("temperature_2m_min") if previous else None
    if (
        tmin is not None
        and prev_min is not None
        and tmin <= t.cold_wave_min_c
        and prev_min - tmin >= t.cold_wave_drop_c
    ):
        found.append("cold_wave")
    return found


def parse_daily(payload: Any) -> list[dict[str, Any]]:
    """Open-Meteo's ``daily`` block as one dict per day; WeatherProviderError says what is malformed."""
    if not isinstance(payload, dict):
        raise WeatherProviderError("malformed response: expected a JSON object")
    if payload.get("error"):
        raise WeatherProviderError(f"Open-Meteo error: {payload.get('reason', 'no reason given')}")
    daily = payload.get("daily")
    if not isinstance(daily, dict) or not isinstance(daily.get("time"), list):
        raise WeatherProviderError("malformed response: no daily.time array")
    times = daily["time"]
    days: list[dict[str, Any]] = []
    for i, text in enumerate(times):
        try:
            entry: dict[str, Any] = {"day": date.fromisoformat(str(text))}
        except ValueError:
            raise WeatherProviderError(
                f"malformed response: daily.time[{i}] = {text!r} is not a date"
            ) from None
        days.append(entry)
    for name in DAILY_FIELDS:
        values = daily.get(name)
        if not isinstance(values, list) or len(values) != len(times):
            raise WeatherProviderError(
                f"malformed response: daily.{name} missing or not {len(times)} values long"
            )
        for i, value in enumerate(values):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise WeatherProviderError(
                    f"malformed response: daily.{name}[{i}] = {value!r} is not a number"
                )
            days[i][name] = value
    return days


def episodes(days: Sequence[Mapping[str, Any]], target: date, t: Thresholds) -> list[tuple[str, date, date]]:
    """(kind, first day, last day of its streak) for each kind showing on ``target`` or the day after.

    A storm lasting several days keeps the date it started as its id, so it is one alert. Its
    last day is the last one the forecast shows it on (the forecast may not reach its end).
    """
    kinds_by_day: dict[date, list[str]] = {}
    previous = None
    for entry in days:
        kinds_by_day[entry["day"]] = kinds_on(entry, previous, t)
        previous = entry
    found = []
    for kind in WEATHER_KINDS:
        for look in (target, target + timedelta(days=1)):
            if kind in kinds_by_day.get(look, []):
                start = end = look
                while kind in kinds_by_day.get(start - timedelta(days=1), []):
                    start -= timedelta(days=1)
                while kind in kinds_by_day.get(end + timedelta(days=1), []):
                    end += timedelta(days=1)
                found.append((kind, start, end))
                break
    return found


class OpenMeteoProvider(WeatherProvider):
    """Open-Meteo's free forecast API; cities are geocoded from ``[plugins.weather.cities]``."""

    name: ClassVar[str] = "open-meteo"

    def alerts(self, city: str, day: date, settings: PluginSettings) -> list[Mapping[str, Any]]:
        cities: Mapping[str, Sequence[float]] = _settings_value(settings, "cities")
        if city not in cities:
            raise WeatherProviderError(f"no coordinates for {city!r}: add it to [plugins.weather.cities]")
        lat, lon = cities[city]
        params = {
            "latitude": f"{lat}",
            "longitude": f"{lon}",
            "daily": ",".join(DAILY_FIELDS),
            "timezone": "auto",
            # Two days back to recognise a storm that started earlier, one ahead to warn in time.
            "start_date": (day - timedelta(days=2)).isoformat(),
            "end_date": (day + timedelta(days=1)).isoformat(),
        }
        url = f"{_settings_value(settings, 'open_meteo_url')}?{urllib.parse.urlencode(params)}"
        payload = self._get(url, float(_settings_value(settings, "timeout_seconds")))
        thresholds: Thresholds = _settings_value(settings, "thresholds")
        # Named in Latin letters (Shanghai, not 上海): the ids alerts had before cities were canonical.
        known = city_named(city)
        name = known.english if known else city
        return [
            {
                "id": f"open-meteo/{name}/{kind}/{start.isoformat()}",
                "kind": kind,
                "day": start.isoformat(),
                "ends": end.isoformat(),
                "headline": "",
            }
            for kind, start, end in episodes(parse_daily(payload), day, thresholds)
        ]

    @staticmethod
    def _get(url: str, timeout: float) -> Any:
        request = urllib.request.Request(
            url, headers={"Accept": "application/json", "User-Agent": "careflow"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise WeatherProviderError(f"Open-Meteo answered HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WeatherProviderError(f"Open-Meteo unreachable: {reason}") from None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise WeatherProviderError("malformed response: not JSON") from None


# The alert file a center keeps from its meteorological bureau's warnings.
ALERT_FIELDS = ("id", "city", "kind", "starts", "ends", "headline")
REQUIRED_ALERT_FIELDS = ("id", "city", "kind", "starts")


def read_alert_file(path: Path) -> list[dict[str, Any]]:
    """Alerts from a CSV or JSON file; every bad row and field is reported at once."""
    try:
        text = path.read_text(encoding="utf-8").lstrip("\ufeff")
    except FileNotFoundError:
        raise WeatherProviderError(f"{path}: alert file not found") from None
    except UnicodeDecodeError:
        raise WeatherProviderError(f"{path}: not UTF-8 text") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise WeatherProviderError(f"{path}: not valid JSON: {exc}") from None
        if isinstance(data, dict):
            data = data.get("alerts")
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise WeatherProviderError(f'{path}: expected a list of alert objects (or {{"alerts": [...]}})')
        rows = [
            ({k: "" if v is None else str(v) for k, v in r.items()}, f"alert {i}")
            for i, r in enumerate(data, 1)
        ]
    else:
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip() for h in reader.fieldnames or []]
        unknown = [h for h in header if h not in ALERT_FIELDS]
        missing = [h for h in REQUIRED_ALERT_FIELDS if h not in header]
        if unknown or missing:
            raise WeatherProviderError(
                f"{path}: row 1: "
                + "; ".join(
                    [f"unknown column {h!r}" for h in unknown] + [f"missing column {h!r}" for h in missing]
                )
                + f"; expected columns {','.join(ALERT_FIELDS)}"
            )
        reader.fieldnames = header
        rows = [
            ({k: (v or "").strip() for k, v in r.items() if k}, f"row {i}") for i, r in enumerate(reader, 2)
        ]
    alerts, problems = [], []
    for raw, where in rows:
        alert, row_problems = _parse_alert(raw, where)
        problems.extend(row_problems)
        if alert:
            alerts.append(alert)
    if problems:
        raise WeatherProviderError(f"{path}: " + "; ".join(problems))
    return alerts


def _parse_alert(raw: Mapping[str, str], where: str) -> tuple[dict[str, Any] | None, list[str]]:
    problems = []
    for name in raw:
        if name not in ALERT_FIELDS:
            problems.append(f"{where}, field {name}: unknown field; expected {','.join(ALERT_FIELDS)}")
    for name in REQUIRED_ALERT_FIELDS:
        if not raw.get(name, "").strip():
            problems.append(f"{where}, field {name}: required, must not be empty")
    kind = raw.get("kind", "").strip()
    if kind and kind not in WEATHER_KINDS:
        problems.append(f"{where}, field kind: {kind!r} is not one of {', '.join(WEATHER_KINDS)}")
    days: dict[str, date] = {}
    for name in ("starts", "ends"):
        text = raw.get(name, "").strip()
        if text:
            try:
                days[name] = date.fromisoformat(text)
            except ValueError:
                problems.append(f"{where}, field {name}: {text!r} is not a date (YYYY-MM-DD)")
    if "starts" in days and "ends" in days and days["ends"] < days["starts"]:
        problems.append(f"{where}, field ends: before starts")
    if len(raw.get("id", "")) > 100:
        problems.append(f"{where}, field id: longer than 100 characters")
    if problems:
        return None, problems
    return {
        "id": raw["id"].strip(),
        "city": raw["city"].strip(),
        "kind": kind,
        "starts": days["starts"],
        "ends": days.get("ends", days["starts"]),
        "headline": raw.get("headline", "").strip(),
    }, []


class AlertFileProvider(WeatherProvider):
    """Warnings a center receives from its local meteorological bureau, kept in ``alerts_file``."""

    name: ClassVar[str] = "file"

    def alerts(self, city: str, day: date, settings: PluginSettings) -> list[Mapping[str, Any]]:
        path = Path(_settings_value(settings, "alerts_file"))
        city = canonical_city(city)
        return [
            {
                "id": a["id"],
                "kind": a["kind"],
                "day": a["starts"].isoformat(),
                "ends": a["ends"].isoformat(),
                "headline": a["headline"],
            }
            for a in read_alert_file(path)
            if canonical_city(a["city"]) == city and a["starts"] <= day <= a["ends"]
        ]
