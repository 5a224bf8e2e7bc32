"""Remind customers to change tires for the season, by their city's climate and hemisphere."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import ClassVar

from careflow import CarePlugin, Customer, Occasion, PlanContext, PluginSettings, Purpose, hookimpl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import func, select

from careflow_tire_season.climate import Hemisphere, MonthDay, Season, any_due, changes_due

careflow_requires = ">=0.1,<0.2"

TEMPLATES = Path(__file__).parent / "templates"


class ClimateRule(BaseModel):
    """When tires change in this climate, as northern-hemisphere month-days (the south is shifted)."""

    model_config = ConfigDict(extra="forbid")

    winter_tires_from: str  # around the first frost
    summer_tires_from: str  # after the last frost

    @field_validator("winter_tires_from", "summer_tires_from")
    @classmethod
    def _month_day(cls, value: str) -> str:
        MonthDay.parse(value)
        return value

    def changes(self) -> dict[Season, MonthDay]:
        return {
            "winter": MonthDay.parse(self.winter_tires_from),
            "summer": MonthDay.parse(self.summer_tires_from),
        }


class CityClimate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    climate: str
    hemisphere: Hemisphere = "north"


DEFAULT_CLIMATES: dict[str, ClimateRule] = {
    "severe": ClimateRule(winter_tires_from="10-01", summer_tires_from="04-25"),
    "cold": ClimateRule(winter_tires_from="10-20", summer_tires_from="04-10"),
    "temperate": ClimateRule(winter_tires_from="11-01", summer_tires_from="04-01"),
}

# Cities where winter tires matter; a city left out (Shanghai, Guangzhou, Sydney) gets no reminders.
DEFAULT_CITIES: dict[str, CityClimate] = {
    **{
        c: CityClimate(climate="severe")
        for c in ("Harbin", "哈尔滨", "Changchun", "长春", "Urumqi", "乌鲁木齐")
    },
    **{
        c: CityClimate(climate="cold")
        for c in ("Shenyang", "沈阳", "Oslo", "Stockholm", "Helsinki", "Toronto")
    },
    **{c: CityClimate(climate="temperate") for c in ("Munich", "Vienna", "Zurich")},
    "Christchurch": CityClimate(climate="temperate", hemisphere="south"),
    "Queenstown": CityClimate(climate="cold", hemisphere="south"),
}


def _default_cities() -> dict[str, CityClimate | str]:
    return dict(DEFAULT_CITIES)


class TireSeasonSettings(PluginSettings):
    """``[plugins.tire_season]``: the reminder window and the city -> climate table."""

    days_before: int = Field(default=14, ge=0, le=60)
    climates: dict[str, ClimateRule] = Field(default_factory=lambda: dict(DEFAULT_CLIMATES))
    # City -> climate name, or {climate = "...", hemisphere = "south"}. Replaces the defaults.
    cities: dict[str, CityClimate | str] = Field(default_factory=_default_cities)

    @model_validator(mode="after")
    def _known_climates(self) -> TireSeasonSettings:
        for city, entry in self.cities.items():
            climate = entry if isinstance(entry, str) else entry.climate
            if climate not in self.climates:
                defined = ", ".join(sorted(self.climates))
                raise ValueError(f"cities.{city}: climate {climate!r} is not defined (defined: {defined})")
        return self

    def city_table(self) -> dict[str, CityClimate]:
        """Lower-cased city name -> its climate (customer cards are matched case-insensitively).

        SQLite's lower() folds only ASCII letters, so write non-ASCII names as customer cards do.
        """
        return {
            city.lower(): entry if isinstance(entry, CityClimate) else CityClimate(climate=entry)
            for city, entry in self.cities.items()
        }


class TireSeasonPlugin(CarePlugin):
    name = "tire_season"
    description = "Reminds customers to fit winter tires before the first frost and summer tires after."
    priority = 45
    purpose = Purpose.SERVICE
    settings_model = TireSeasonSettings
    variables: ClassVar[Mapping[str, str]] = {
        "season": "'winter' or 'summer': the tires to fit",
        "change_by": "the day to have them on by (ISO date; use the date filter)",
        "climate": "the climate name of the customer's city",
    }

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        settings = ctx.settings
        assert isinstance(settings, TireSeasonSettings)
        table = settings.city_table()
        days = ctx.candidate_days()
        # Outside the weeks before a change, no city qualifies and no customer is even loaded.
        cities = [
            city
            for city, where in table.items()
            if any_due(
                settings.climates[where.climate].changes(), where.hemisphere, days, settings.days_before
            )
        ]
        if not cities:
            return
        query = select(Customer).where(ctx.in_batch(), func.lower(Customer.city).in_(cities))
        for customer in ctx.session.scalars(query.order_by(Customer.id)):
            where = table.get((customer.city or "").lower())
            if where is None:
                continue
            rule = settings.climates[where.climate]
            today = ctx.local_today(customer)
            for change in changes_due(rule.changes(), where.hemisphere, today, settings.days_before):
                yield Occasion(
                    customer=customer,
                    key=change.season,
                    period=str(change.change_by.year),  # one reminder per season change
                    due_date=today,
                    context={
                        "season": change.season,
                        "change_by": change.change_by.isoformat(),
                        "climate": where.climate,
                    },
                )


@hookimpl
def careflow_care_plugins() -> list[CarePlugin]:
    return [TireSeasonPlugin()]


@hookimpl
def careflow_template_dirs() -> list[Path]:
    return [TEMPLATES]
