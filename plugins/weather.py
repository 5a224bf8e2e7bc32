"""Special-weather care: typhoon, rainstorm, snow, cold wave, heat, hail and strong-wind advice per city.

Providers come from the ``careflow_weather_providers`` hook; the one named by
``[plugins.weather] provider`` is asked about each city and local day in the pre-planning
step, again every ``refresh_minutes``, so a warning issued during the day reaches the city's
customers that day. The latest answer is kept in ``weather_reports``; one process claims a
city before asking (compare-and-set), so re-runs, batches, shards and other processes never
ask about it within the interval. A provider failure is reported and skips weather care for
that city only (the next run asks again: failures are not stored). Each alert is one message
per customer, keyed by the alert's id; it expires when the alert's last day is over.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator
from sqlalchemy import or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload, sessionmaker

from careflow import (
    CarePlugin,
    Center,
    Customer,
    Occasion,
    PlanContext,
    PluginSettings,
    PrepareContext,
    Purpose,
    WeatherProvider,
    WeatherReport,
    canonical_city,
    canonicalise_cards,
    city_label,
    display_name,
    hookimpl,
)

from .weather_sources import (
    WEATHER_KINDS,
    AlertFileProvider,
    OpenMeteoProvider,
    Thresholds,
)

log = logging.getLogger(__name__)

Kind = Literal["typhoon", "rainstorm", "snow", "cold_wave", "heat", "hail", "strong_wind"]
# A process asking the provider keeps its claim this much longer than the call may take,
# so a process that died mid-call holds up the city's next look-up for about a minute only.
_CLAIM_MARGIN = timedelta(seconds=60)


class WeatherSettings(PluginSettings):
    provider: str = "open-meteo"
    kinds: list[Kind] = Field(default_factory=lambda: list(WEATHER_KINDS))  # type: ignore[arg-type]
    # City -> [latitude, longitude] (no geocoding API call); any spelling (Shanghai, 上海市),
    # stored under its canonical name (careflow.customers.cities).
    cities: dict[str, tuple[float, float]] = Field(default_factory=dict)
    open_meteo_url: str = "https://api.open-meteo.com/v1/forecast"
    timeout_seconds: float = Field(default=10, gt=0, le=120)
    # Each city's answer is asked for again after this long (one call per city and interval,
    # however many runs, batches and processes); ``careflow scheduler`` plans weather this often.
    refresh_minutes: int = Field(default=60, ge=5, le=24 * 60)
    alerts_file: Path | None = None  # for provider = "file": CSV or JSON from the local bureau
    thresholds: Thresholds = Field(default_factory=Thresholds)

    @field_validator("cities")
    @classmethod
    def _canonical_on_earth(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        """Keys in canonical form (any spelling may be written), coordinates that exist."""
        canonical: dict[str, tuple[float, float]] = {}
        written: dict[str, str] = {}
        for city, (lat, lon) in value.items():
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"{city}: expected [latitude, longitude] in degrees, got [{lat}, {lon}]")
            name = canonical_city(city)
            if not name:
                raise ValueError("a city name must not be empty")
            if name in canonical and canonical[name] != (lat, lon):
                raise ValueError(
                    f"{written[name]} and {city} are the same city ({name}) with different coordinates"
                )
            canonical[name], written[name] = (lat, lon), city
        return canonical

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

    def replan_interval(self, settings: PluginSettings) -> timedelta | None:
        assert isinstance(settings, WeatherSettings)
        return timedelta(minutes=settings.refresh_minutes)

    def prepare(self, ctx: PrepareContext) -> list[str]:
        """Ask the provider about each city and local day whose answer is older than the interval."""
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
        with ctx.sessions() as session:
            center_tz = dict(session.execute(select(Center.id, Center.timezone)).all())
            # Each city on the local day of its customers' time zones (usually one day per city).
            rows = session.execute(
                select(Customer.city, Customer.timezone, Customer.center_id)
                .where(Customer.city.is_not(None), Customer.is_staff.is_(False))
                .distinct()
            ).all()
        renamed = canonicalise_cards(ctx.sessions, {str(city) for city, _, _ in rows})
        wanted: set[tuple[str, date]] = set()
        for city, timezone, center_id in rows:
            name = renamed.get(str(city), str(city))
            if name:
                day = ctx.day or ctx.now.astimezone(ZoneInfo(timezone or center_tz[center_id])).date()
                wanted.add((name, day))
        problems = []
        if provider.name == OpenMeteoProvider.name:
            # One line for every city Open-Meteo cannot be asked about, not one per city and run.
            unknown = sorted({city_label(city) for city, _ in wanted if city not in cfg.cities})
            if unknown:
                problems.append(
                    f"no weather care in {', '.join(unknown)}: no coordinates in [plugins.weather.cities]"
                )
            wanted = {(city, day) for city, day in wanted if city in cfg.cities}
        refresh = timedelta(minutes=cfg.refresh_minutes)
        hold = timedelta(seconds=cfg.timeout_seconds) + _CLAIM_MARGIN
        for city, day in sorted(wanted - _fresh(ctx.sessions, provider.name, wanted, ctx.now - refresh)):
            if not _claim(ctx.sessions, provider.name, city, day, now=ctx.now, stale=refresh, hold=hold):
                continue  # another process is asking, or has just asked
            problem = self._fetch(ctx, provider, city, day)
            if problem:
                problems.append(f"weather for {city_label(city)} on {day.isoformat()} skipped: {problem}")
        return problems

    def _fetch(self, ctx: PrepareContext, provider: WeatherProvider, city: str, day: date) -> str | None:
        """Ask the provider under this process's claim; store the answer, or give the claim back."""
        try:
            answer = list(provider.alerts(city, day, ctx.settings))
            problem = next((p for alert in answer if (p := _valid_alert(alert))), None)
        except Exception as exc:  # any provider failure costs this city only
            log.warning("weather provider %s failed for %s: %s", provider.name, city, exc)
            answer, problem = [], str(exc)
        values: dict[str, Any] = {"claimed_until": None}
        if problem is None:
            # The latest answer replaces the one before: a warning lifted since is not planned any more.
            values.update(alerts=[{k: str(v) for k, v in a.items()} for a in answer], fetched_at=ctx.now)
        with ctx.sessions.begin() as session:
            session.execute(
                update(WeatherReport)
                .where(*_report_is(provider.name, city, day))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
        return f"{provider.name}: {problem}" if problem else None

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        cfg = ctx.settings
        assert isinstance(cfg, WeatherSettings)
        reports: dict[tuple[str, date], list[dict[str, Any]]] = {}
        for report in ctx.session.scalars(
            select(WeatherReport).where(
                WeatherReport.provider == cfg.provider,
                WeatherReport.day.in_(ctx.candidate_days()),
                WeatherReport.fetched_at.is_not(None),
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
            locale = customer.locale or customer.center.locale
            for alert in reports.get((str(customer.city), today), []):
                yield Occasion(
                    customer=customer,
                    key="weather",
                    period=alert["id"],  # one storm, one message, however many days and look-ups
                    due_date=today,
                    context={
                        "kind": alert["kind"],
                        "headline": alert.get("headline", ""),
                        "city": display_name(str(customer.city), locale),
                        "alert_day": alert.get("day", today.isoformat()),
                    },
                    # Advice for weather that is over is noise: not sent once its last day is.
                    expires_at=ctx.end_of(customer, _last_day(alert, today)),
                )


def _last_day(alert: Mapping[str, Any], today: date) -> date:
    """The alert's last day; an alert that does not say is taken to last the day it was reported for."""
    try:
        return date.fromisoformat(str(alert["ends"]))
    except (KeyError, ValueError):
        return today


def _report_is(provider: str, city: str, day: date) -> tuple[Any, ...]:
    return (WeatherReport.provider == provider, WeatherReport.city == city, WeatherReport.day == day)


def _fresh(
    sessions: sessionmaker[Session], provider: str, wanted: set[tuple[str, date]], since: datetime
) -> set[tuple[str, date]]:
    """The (city, day) pairs answered after ``since``: one query, so a quiet re-run costs no claims."""
    if not wanted:
        return set()
    with sessions() as session:
        rows = session.execute(
            select(WeatherReport.city, WeatherReport.day).where(
                WeatherReport.provider == provider,
                tuple_(WeatherReport.city, WeatherReport.day).in_(sorted(wanted)),
                WeatherReport.fetched_at > since,
            )
        )
        return {(city, day) for city, day in rows}


def _claim(
    sessions: sessionmaker[Session],
    provider: str,
    city: str,
    day: date,
    *,
    now: datetime,
    stale: timedelta,
    hold: timedelta,
) -> bool:
    """Compare-and-set: True if this process may ask about ``city`` on ``day`` now (committed at once).

    Taken when the answer is missing or older than ``stale`` and nobody else holds the claim;
    the first insert wins for a city never asked about. Works alike on SQLite and PostgreSQL.
    """
    with sessions.begin() as session:
        taken = session.execute(
            update(WeatherReport)
            .where(
                *_report_is(provider, city, day),
                or_(WeatherReport.fetched_at.is_(None), WeatherReport.fetched_at <= now - stale),
                or_(WeatherReport.claimed_until.is_(None), WeatherReport.claimed_until <= now),
            )
            .values(claimed_until=now + hold)
            .execution_options(synchronize_session=False)
        )
        if getattr(taken, "rowcount", 0) == 1:
            return True
        dialect: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        inserted = session.execute(
            dialect.insert(WeatherReport)
            .values(provider=provider, city=city, day=day, alerts=[], claimed_until=now + hold)
            .on_conflict_do_nothing(index_elements=["provider", "city", "day"])
            .returning(WeatherReport.id)  # rowcount is not reliable for upserts on every driver
        )
        return inserted.first() is not None


@hookimpl(trylast=True)
def careflow_care_plugins() -> list[CarePlugin]:
    return [WeatherPlugin()]


@hookimpl(trylast=True)
def careflow_weather_providers() -> list[WeatherProvider]:
    return [OpenMeteoProvider(), AlertFileProvider()]
