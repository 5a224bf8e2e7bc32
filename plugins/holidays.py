"""Holiday greetings: Spring Festival, Lantern, Mid-Autumn (lunar), National Day, New Year, Christmas."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import date
from typing import Any, ClassVar, Literal

from pydantic import Field
from sqlalchemy import ColumnElement, and_, false, func, or_, select

from careflow import CarePlugin, Center, Customer, Occasion, PlanContext, PluginSettings, Purpose, hookimpl

from .lunar import lunar_to_solar

Holiday = Literal["spring_festival", "lantern", "mid_autumn", "national_day", "new_year", "christmas"]

# Solar date of each holiday in a (solar) year. Lunar holidays of lunar year Y fall in solar year Y.
HOLIDAY_DATES: dict[str, Callable[[int], date]] = {
    "spring_festival": lambda y: lunar_to_solar(y, 1, 1),
    "lantern": lambda y: lunar_to_solar(y, 1, 15),
    "mid_autumn": lambda y: lunar_to_solar(y, 8, 15),
    "national_day": lambda y: date(y, 10, 1),
    "new_year": lambda y: date(y, 1, 1),
    "christmas": lambda y: date(y, 12, 25),
}


def holidays_on(day: date) -> list[str]:
    """The holidays whose date is ``day``."""
    return [name for name, when in HOLIDAY_DATES.items() if when(day.year) == day]


class HolidaySettings(PluginSettings):
    holidays: list[Holiday] = Field(default_factory=lambda: list(HOLIDAY_DATES))  # type: ignore[arg-type]
    # Holiday -> the languages/locales it is sent to (prefix match: "en" covers en_GB).
    # Holidays not listed go to everyone.
    locales: dict[Holiday, list[str]] = Field(default_factory=lambda: {"christmas": ["en"]})  # type: ignore[arg-type]
    # Center code -> the holidays that center sends (overrides ``holidays`` for it).
    centers: dict[str, list[Holiday]] = Field(default_factory=dict)


def _locale_matches(column: ColumnElement[str], wanted: list[str]) -> ColumnElement[bool]:
    options = [or_(column == loc, column.like(f"{loc}\\_%", escape="\\")) for loc in wanted]
    return or_(*options) if options else false()


def _locale_ok(locale: str, wanted: list[str]) -> bool:
    return any(locale == w or locale.startswith(f"{w}_") for w in wanted)


class HolidaysPlugin(CarePlugin):
    name = "holidays"
    description = (
        "Greets customers on Spring Festival, Lantern, Mid-Autumn, National Day, New Year, Christmas."
    )
    priority = 10
    purpose = Purpose.MARKETING
    settings_model = HolidaySettings
    # Nobody is loaded on other days; on a holiday, only the customers it greets (all of them due).
    narrows_in_sql = True
    variables: ClassVar[Mapping[str, str]] = {
        "holiday": "spring_festival, lantern, mid_autumn, national_day, new_year or christmas",
        "year": "the solar year of the holiday",
    }
    # Realistic values so template lint can trial-render the texts.
    samples: ClassVar[Mapping[str, Any]] = {"holiday": "spring_festival", "year": 2027}

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        cfg = ctx.settings
        assert isinstance(cfg, HolidaySettings)
        todays = {day: holidays_on(day) for day in ctx.candidate_days()}
        names = {name for found in todays.values() for name in found}
        if not names:
            return  # no holiday anywhere on Earth today: not a single customer is loaded
        center_codes = dict(ctx.session.execute(select(Center.id, Center.code)).all())
        locale = func.coalesce(Customer.locale, Center.locale)
        who = []
        for name in sorted(names):
            centers = [
                cid for cid, code in center_codes.items() if name in cfg.centers.get(code, cfg.holidays)
            ]
            condition: ColumnElement[bool] = Customer.center_id.in_(centers)
            if name in cfg.locales:
                condition = and_(condition, _locale_matches(locale, cfg.locales[name]))
            who.append(condition)
        query = (
            select(Customer)
            .join(Center, Center.id == Customer.center_id)
            .where(ctx.in_batch(), Customer.is_staff.is_(False), or_(*who))
        )
        for customer in ctx.session.scalars(query):
            today = ctx.local_today(customer)
            code = center_codes[customer.center_id]
            for name in todays.get(today, []):
                if name not in cfg.centers.get(code, cfg.holidays):
                    continue
                cust_locale = customer.locale or customer.center.locale
                if name in cfg.locales and not _locale_ok(cust_locale, cfg.locales[name]):
                    continue
                yield Occasion(
                    customer=customer,
                    key=name,
                    period=str(today.year),
                    due_date=today,
                    context={"holiday": name, "year": today.year},
                    template="holidays",
                    # A greeting is for the day itself: one deferred past it is not sent.
                    expires_at=ctx.end_of(customer, today),
                )


@hookimpl(trylast=True)
def careflow_care_plugins() -> list[CarePlugin]:
    return [HolidaysPlugin()]
