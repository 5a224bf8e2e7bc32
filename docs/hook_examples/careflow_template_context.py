from typing import Any

from careflow import CareEvent, Customer, hookimpl


@hookimpl
def careflow_template_context(event: CareEvent, customer: Customer) -> dict[str, Any] | None:
    if event.plugin != "car_anniversary":
        return None  # only add what your own templates use
    return {"customer_since": customer.created_at.year, "first_name": customer.name.split()[0]}
