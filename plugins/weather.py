"""Special-weather care: typhoon, rainstorm, snow, cold wave, heat, hail and strong-wind advice per city.

Providers come from the ``careflow_weather_providers`` hook; the one named by
``[plugins.weather] provider`` is asked once per city and local day in the pre-planning
step, and its answer is stored in ``weather_reports``, so re-runs and other processes never
ask again. A provider failure is reported and skips weather care for that city only (and
is retried by the next run, since failures are not stored).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator
from sqlalchemy import select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from careflow.care import CarePlugin, Occasion, PlanContext, PluginSettings, PrepareContext, WeatherProvider
from careflow.hookspecs import hookimpl
from careflow.models import Center, Customer, Purpose, WeatherReport

from .weather_sources import (
    WEATHER_KINDS,
    AlertFileProvider,
    OpenMeteoProvider,
    Thresholds,
)

log = logging.getLogger(__name__)

Kind = Literal["typhoon", "rainstorm", "snow", "cold_wave", "heat", "hail", "strong_wind"]


class WeatherSettings(PluginSettings):
    provider: str = "open-meteo"
    kinds: list[Kind] = Field(default_factory=lambda: list(WEATHER_KINDS))  # type: ignore[arg-type]
    # City name as written on customer cards -> [latitude, longitude] (no geocoding API call).
    cities: dict[str, tuple[float, float]] = Field(default_factory=dict)
    open_meteo_url: str = "https://api.open-meteo.com/v1/forecast"
    timeout_seconds: float = Field(default=10, gt=0, le=120)
    alerts_file: Path | None = None  # for provider = "file": CSV or JSON from the local bureau
    thresholds: Thresholds = Field(default_factory=Thresholds)

    @field_validator("cities")
    @classmethod
    def _on_earth(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for city, (lat, lon) in value.items():
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"{city}: expected [latitude, longitude] in degrees, got [{lat}, {lon}]")
        return value

    @model_validator(mode="after")
    def _file_given(self) -> WeatherSettings:
        if self.provider == "file" and self.alerts_file is None:
            raise ValueError('provider "file" needs alerts_file = "path/to/alerts.csv" (or .json)')
        return self


def _valid_alert(alert: Any) -> str | None:
    if not isinstance(alert, Mapping):
        return f"returned {alert!r}, not an alert mapping"
    if not isinstance(alert.get("id"), str) or not alert["id"]:
        return f"alert without an id: {dict(alert)!r}"
    if alert.get("kind") not in WEATHER_KINDS:
        return f"alert {alert['id']!r} has unknown kind {alert.get('kind')!r}"
    return None


class WeatherPlugin(CarePlugin):
    name = "weather"
    description = "Car-care advice before special weather in the customer's city; one message per alert."
    priority = 90  # safety first: it wins every frequency-cap contest
    purpose = Purpose.SERVICE
    settings_model = WeatherSettings
    # Nobody is loaded on a calm day; on a stormy one, the affected cities' customers (the
    # (city, id) index), all of them due.
    narrows_in_sql = True
    variables: ClassVar[Mapping[str, str]] = {
        "kind": "typhoon, rainstorm, snow, cold_wave, heat, hail or strong_wind",
        "headline": "the bureau's headline (file provider), or empty",
        "city": "the affected city",
        "alert_day": "the day the weather starts (ISO; use | date)",
    }
    # Realistic values so template lint can trial-render the texts (typhoon: the longest advice).
    samples: ClassVar[Mapping[str, Any]] = {
        "kind": "typhoon",
        "headline": "",
        "city": "Shanghai",
        "alert_day": "2026-08-02",
    }

    def prepare(self, ctx: PrepareContext) -> list[str]:
        """Ask the provider once per city and local day; store answers, report failures."""
        cfg = ctx.settings
        assert isinstance(cfg, WeatherSettings)
        providers: dict[str, WeatherProvider] = {}
        for group in ctx.hook.careflow_weather_providers():
            for provider in group or []:
                providers.setdefault(provider.name, provider)
        provider = providers.get(cfg.provider)
        if provider is None:
            known = ", ".join(sorted(providers)) or "none"
            return [f"[plugins.weather] provider {cfg.provider!r} is not installed (installed: {known})"]
        center_tz = dict(ctx.session.execute(select(Center.id, Center.timezone)).all())
        wanted: set[tuple[str, date]] = set()
        # Each city on the local day of its customers' time zones (usually one day per city).
        rows = ctx.session.execute(
            select(Customer.city, Customer.timezone, Customer.center_id)
            .where(Customer.city.is_not(None), Customer.is_staff.is_(False))
            .distinct()
        )
        for city, timezone, center_id in rows:
            day = ctx.day or ctx.now.astimezone(ZoneInfo(timezone or center_tz[center_id])).date()
            wanted.add((str(city), day))
        if not wanted:
            return []
        stored = {
            (city, day)
            for city, day in ctx.session.execute(
                select(WeatherReport.city, WeatherReport.day).where(
                    WeatherReport.provider == provider.name,
                    tuple_(WeatherReport.city, WeatherReport.day).in_(sorted(wanted)),
                )
            )
        }
        problems = []
        if provider.name == OpenMeteoProvider.name:
            # One line for every city Open-Meteo cannot be asked about, not one per city and run.
            unknown = sorted({city for city, _ in wanted if city not in cfg.cities})
            if unknown:
                problems.append(
                    f"no weather care in {', '.join(unknown)}: no coordinates in [plugins.weather.cities]"
                )
            wanted = {(city, day) for city, day in wanted if city in cfg.cities}
        for city, day in sorted(wanted - stored):
            problem = self._fetch(ctx, provider, city, day)
            if problem:
                problems.append(f"weather for {city} on {day.isoformat()} skipped: {problem}")
        return problems

    def _fetch(self, ctx: PrepareContext, provider: WeatherProvider, city: str, day: date) -> str | None:
        try:
            alerts = list(provider.alerts(city, day, ctx.settings))
        except Exception as exc:  # any provider failure costs this city only
            log.warning("weather provider %s failed for %s: %s", provider.name, city, exc)
            return f"{provider.name}: {exc}"
        for alert in alerts:
            problem = _valid_alert(alert)
            if problem:
                return f"{provider.name}: {problem}"
        report = WeatherReport(
            provider=provider.name,
            city=city,
            day=day,
            alerts=[{k: str(v) for k, v in alert.items()} for alert in alerts],
            fetched_at=ctx.now,
        )
        try:
            with ctx.session.begin_nested():
                ctx.session.add(report)
        except IntegrityError:  # another process stored the same city and day meanwhile
            pass
        return None

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        cfg = ctx.settings
        assert isinstance(cfg, WeatherSettings)
        reports: dict[tuple[str, date], list[dict[str, Any]]] = {}
        for report in ctx.session.scalars(
            select(WeatherReport).where(
                WeatherReport.provider == cfg.provider, WeatherReport.day.in_(ctx.candidate_days())
            )
        ):
            alerts = [a for a in report.alerts if a.get("kind") in cfg.kinds]
            if alerts:
                reports[(report.city, report.day)] = alerts
        if not reports:
            return  # calm weather everywhere: no customer is loaded
        cities = sorted({city for city, _ in reports})
        query = (
            select(Customer)
            .where(ctx.in_batch(), Customer.is_staff.is_(False), Customer.city.in_(cities))
            .options(selectinload(Customer.center))
        )
        for customer in ctx.session.scalars(query):
            today = ctx.local_today(customer)
            for alert in reports.get((str(customer.city), today), []):
                yield Occasion(
                    customer=customer,
                    key="weather",
                    period=alert["id"],  # one storm, one message, however many days it lasts
                    due_date=today,
                    context={
                        "kind": alert["kind"],
                        "headline": alert.get("headline", ""),
                        "city": customer.city,
                        "alert_day": alert.get("day", today.isoformat()),
                    },
                )


@hookimpl(trylast=True)
def careflow_care_plugins() -> list[CarePlugin]:
    return [WeatherPlugin()]


@hookimpl(trylast=True)
def careflow_weather_providers() -> list[WeatherProvider]:
    return [OpenMeteoProvider(), AlertFileProvider()]
