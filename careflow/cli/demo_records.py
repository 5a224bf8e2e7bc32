"""Sample vehicles, visits, points and vouchers for ``careflow demo``, arranged so some care is due today."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from careflow.customers.import_records import VEHICLE_COLUMNS, VISIT_COLUMNS, VehicleImporter, VisitImporter
from careflow.customers.points import PointsRules, balance, redeem
from careflow.customers.service_due import add_months
from careflow.storage.models import Center, Customer, Voucher

MODELS = ["丰田凯美瑞", "本田雅阁", "大众帕萨特", "别克君越", "日产天籁", "Toyota RAV4", "Honda CR-V"]
PROVINCES = "沪粤浙苏川京"


@dataclass
class SampleRecords:
    vehicles: int
    visits: int
    vouchers: int


def sample_rows(
    external_ids: list[str], today: date, seed: int = 20261123
) -> tuple[list[dict[str, str]], list[dict[str, str]], set[str]]:
    """Vehicle and visit rows; every 25th car is due today or in a week, a few cross a points threshold.

    Returns the customers who should hold a voucher about to expire.
    """
    rng = random.Random(seed)
    vehicles: list[dict[str, str]] = []
    visits: list[dict[str, str]] = []
    voucher_holders: set[str] = set()
    for n, ext in enumerate(external_ids, start=1):
        plate = f"{rng.choice(PROVINCES)}{rng.choice('ABCDE')}{rng.randint(10000, 99999)}"
        bought = today - timedelta(days=rng.randint(400, 2000))
        # Most cars are due some day in the coming months; a few today or exactly a week from now.
        due = today + timedelta(days={0: 0, 7: 7, 13: 30}.get(n % 25, rng.randint(10, 170)))
        if n % 60 == 17:  # holds a voucher: due in five days, so the reminder mentions it
            due = today + timedelta(days=5)
        if n % 50 == 21:  # warranty ends in 30 days
            bought = add_months(today + timedelta(days=30), -36)
        last = add_months(due, -6)
        vehicles.append(
            {
                "customer_external_id": ext,
                "plate": plate,
                "vin": "",
                "model": rng.choice(MODELS),
                "purchase_date": bought.isoformat(),
                "warranty_end": add_months(bought, 36).isoformat(),
                "interval_months": "6",
                "interval_km": "10000",
            }
        )
        km = rng.randint(20_000, 80_000)
        before = add_months(last, -6)
        rate = 25  # km a day: 10,000 km take longer than six months, so these are due by time
        spend = [rng.randint(300, 1500), rng.randint(300, 1500), 0]
        dates = [before, last, min(today - timedelta(days=1), last + timedelta(days=40))]
        kinds = ["maintenance", "maintenance", "repair"]
        if n % 30 == 5:  # a big repair yesterday takes the balance over the voucher threshold
            spend[2] = 10_500
            dates[2] = today - timedelta(days=1)
        if n % 60 == 17:  # points bought a voucher half a year ago: it expires within two weeks
            spend[2] = 12_000
            dates[2] = max(last + timedelta(days=1), today - timedelta(days=175))
            voucher_holders.add(ext)
        if n % 40 == 9:  # points earned two years ago expire in twelve days
            dates.append(add_months(today, -24) + timedelta(days=12))
            spend.append(900)
            kinds.append("other")
        for day, amount, kind in zip(dates, spend, kinds, strict=True):
            if day >= today or (kind == "repair" and amount == 0):
                continue
            visits.append(
                {
                    "customer_external_id": ext,
                    "plate": plate,
                    "date": day.isoformat(),
                    "mileage": str(km + rate * (day - before).days),
                    "amount": str(amount),
                    "kind": kind,
                    "voucher_code": "",
                }
            )
    return vehicles, visits, voucher_holders


def import_sample_records(
    session: Session, center: Center, directory: Path, today: date, rules: PointsRules | None
) -> SampleRecords:
    """Write vehicles.csv and visits.csv, import them, and issue the sample vouchers."""
    ids = list(session.scalars(select(Customer.external_id).where(Customer.center_id == center.id)))
    vehicle_rows, visit_rows, holders = sample_rows(sorted(ids), today)
    for name, columns, rows in (
        ("vehicles.csv", VEHICLE_COLUMNS, vehicle_rows),
        ("visits.csv", VISIT_COLUMNS, visit_rows),
    ):
        with (directory / name).open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(rows)
    VehicleImporter(session, center, today).run(directory / "vehicles.csv")
    VisitImporter(session, center, today, points=rules).run(directory / "visits.csv")
    issued = 0
    if rules is not None:
        for customer in session.scalars(
            select(Customer).where(Customer.center_id == center.id, Customer.external_id.in_(sorted(holders)))
        ):
            already = session.scalar(select(Voucher.id).where(Voucher.customer_id == customer.id))
            issued_on = today - timedelta(days=rules.voucher_valid_days - 10)
            if already is None and balance(session, customer.id, issued_on) >= rules.block_points:
                redeem(session, customer, kind="repair", blocks=1, today=issued_on, rules=rules)
                issued += 1
    return SampleRecords(vehicles=len(vehicle_rows), visits=len(visit_rows), vouchers=issued)
