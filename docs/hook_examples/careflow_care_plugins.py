from collections.abc import Iterable, Mapping
from typing import ClassVar

from sqlalchemy import extract, select, tuple_

from careflow import CarePlugin, Customer, Occasion, PlanContext, PluginSettings, Purpose, Vehicle, hookimpl


class CarAnniversarySettings(PluginSettings):
    min_years: int = 1  # [plugins.car_anniversary] min_years = 2


class CarAnniversary(CarePlugin):
    name = "car_anniversary"
    description = "Congratulates customers on each anniversary of buying their car."
    priority = 15
    purpose = Purpose.MARKETING
    settings_model = CarAnniversarySettings
    variables: ClassVar[Mapping[str, str]] = {
        "plate": "the car's plate",
        "years": "how many years the customer has had it",
    }

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        settings = ctx.settings
        assert isinstance(settings, CarAnniversarySettings)
        month_days = [(d.month, d.day) for d in ctx.candidate_days()]
        rows = ctx.session.execute(
            select(Customer, Vehicle)
            .join(Vehicle, Vehicle.customer_id == Customer.id)
            .where(
                ctx.in_batch(),
                tuple_(extract("month", Vehicle.purchase_date), extract("day", Vehicle.purchase_date)).in_(
                    month_days
                ),
            )
        )
        for customer, vehicle in rows:
            today = ctx.local_today(customer)
            assert vehicle.purchase_date is not None
            years = today.year - vehicle.purchase_date.year
            if (vehicle.purchase_date.month, vehicle.purchase_date.day) != (today.month, today.day):
                continue  # another time zone's today
            if years >= settings.min_years:
                yield Occasion(
                    customer=customer,
                    key=f"car-{vehicle.id}",
                    period=str(today.year),
                    due_date=today,
                    context={"plate": vehicle.plate, "years": years},
                )


@hookimpl
def careflow_care_plugins() -> list[CarePlugin]:
    return [CarAnniversary()]
