"""Vehicle and visit import under the customer import's rules: row/column errors, all or nothing, upsert."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from careflow.customers.import_customers import (
    FieldProblem,
    ImportReport,
    Progress,
    control_character_problem,
    read_csv_bytes,
    read_rows,
    tick,
)
from careflow.customers.points import (
    PointsError,
    PointsRules,
    VisitForVoucher,
    check_voucher,
    earn_for_visits,
    release_voucher,
    use_voucher,
)
from careflow.customers.service_due import MAINTENANCE, VISIT_KINDS, VisitFact, next_service
from careflow.errors import ImportDataError
from careflow.storage.models import Center, Customer, ServiceVisit, Vehicle, utcnow

VEHICLE_COLUMNS = (
    "customer_external_id",
    "plate",
    "vin",
    "model",
    "purchase_date",
    "warranty_end",
    "interval_months",
    "interval_km",
)
VISIT_COLUMNS = ("customer_external_id", "plate", "date", "mileage", "amount", "kind", "voucher_code")
_VIN = re.compile(r"[A-HJ-NPR-Z0-9]{17}")  # ISO 3779: no I, O or Q
_CHUNK = 5_000


def parse_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise FieldProblem("not a real date; expected YYYY-MM-DD") from None


def parse_plate(value: str) -> str:
    """Plates are compared as written without spaces, in capitals (粤B 12345 = 粤B12345)."""
    plate = re.sub(r"[\s·-]+", "", value).upper()
    if not plate:
        raise FieldProblem("required, must not be empty")
    if len(plate) > 32:
        raise FieldProblem("too long; at most 32 characters")
    return plate


def parse_vin(value: str) -> str:
    vin = value.replace(" ", "").upper()
    if not _VIN.fullmatch(vin):
        raise FieldProblem("not a VIN; expected 17 letters and digits without I, O or Q")
    return vin


def whole_number(low: int, high: int, unit: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value.replace(",", "").replace("_", ""))
        except ValueError:
            raise FieldProblem(f"not a whole number of {unit}") from None
        if not low <= number <= high:
            raise FieldProblem(f"out of range; expected {low} to {high} {unit}")
        return number

    return parse


def parse_amount(value: str) -> Decimal:
    try:
        amount = Decimal(value.replace(",", ""))
    except InvalidOperation:
        raise FieldProblem("not an amount; expected e.g. 680 or 680.50") from None
    if not amount.is_finite() or amount < 0:
        raise FieldProblem("must be zero or more")
    if amount != amount.quantize(Decimal("0.01")) or amount >= Decimal("1e10"):
        raise FieldProblem("at most 2 decimals and below 10,000,000,000")
    return amount


def parse_kind(value: str) -> str:
    kind = value.strip().lower()
    if kind not in VISIT_KINDS:
        raise FieldProblem(f"unknown visit kind; expected one of: {', '.join(VISIT_KINDS)}")
    return kind


def parse_voucher_code(value: str) -> str:
    code = value.strip().upper()
    if len(code) > 32:
        raise FieldProblem("too long for a voucher code")
    return code


def center_today(center: Center) -> date:
    """The center's local date: records dated after it are refused as "in the future"."""
    return utcnow().astimezone(ZoneInfo(center.timezone)).date()


def refresh_service_due(session: Session, vehicle_ids: Iterable[int]) -> None:
    """Recompute ``next_service_due`` for these vehicles from their full visit history."""
    ids = sorted(set(vehicle_ids))
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        history: dict[int, list[VisitFact]] = {i: [] for i in chunk}
        for vid, day, mileage, kind in session.execute(
            select(ServiceVisit.vehicle_id, ServiceVisit.date, ServiceVisit.mileage, ServiceVisit.kind).where(
                ServiceVisit.vehicle_id.in_(chunk)
            )
        ):
            if vid is not None:
                history[vid].append(VisitFact(day, mileage, kind))
        for vehicle in session.scalars(select(Vehicle).where(Vehicle.id.in_(chunk))):
            due = next_service(
                history[vehicle.id],
                purchase_date=vehicle.purchase_date,
                interval_months=vehicle.interval_months,
                interval_km=vehicle.interval_km,
            )
            vehicle.next_service_due = due.due if due else None
            vehicle.next_service_reason = due.reason if due else None
            vehicle.next_service_from = due.cycle_start if due else None


@dataclass
class _RecordImporter:
    """Shared steps: parse every row, resolve customers, report problems, write only when clean."""

    session: Session
    center: Center
    today: date  # the center's local day: nothing recorded may lie after it
    skip_invalid: bool = False
    progress: Progress | None = None
    columns: ClassVar[tuple[str, ...]]
    required: ClassVar[tuple[str, ...]]
    parsers: ClassVar[dict[str, Callable[[str], Any]]]
    _customers: dict[str, Customer] = field(default_factory=dict)

    def run(self, path: Path, encoding: str | None = None) -> ImportReport:
        return self.run_bytes(path.read_bytes(), path.name, encoding)

    def run_bytes(self, data: bytes, name: str, encoding: str | None = None) -> ImportReport:
        """Import a file's bytes, in ``encoding`` or the one detected (the report says which)."""
        decoded = read_csv_bytes(data, name, self.center, encoding)
        report = self.run_text(decoded.text)
        report.read_as = decoded.describe(name)
        return report

    def run_text(self, text: str) -> ImportReport:
        header, rows = read_rows(text, self.columns, self.required)
        return self.run_rows(header, rows)

    def run_rows(self, header: list[str], rows: list[dict[str, str]]) -> ImportReport:
        report = ImportReport()
        parsed: list[tuple[int, dict[str, Any]]] = []
        for number, raw in enumerate(rows, start=2):  # row 1 is the header
            tick(self.progress, "checking", number - 1, len(rows))
            problems, values = self._parse_row(number, raw, header)
            if not problems:
                parsed.append((number, values))
            else:
                report.problems.extend(problems)
                report.skipped_rows.append(number)
        self._load_customers([v["customer_external_id"] for _, v in parsed])
        good: list[tuple[int, dict[str, Any]]] = []
        for number, values in parsed:
            problems = self.check_row(number, values)
            if problems:
                report.problems.extend(problems)
                report.skipped_rows.append(number)
            else:
                good.append((number, values))
        good = self.check_together(good, report)
        report.skipped_rows.sort()
        report.problems.sort(key=_row_number)  # stable: a row's problems stay in column order
        if report.problems and not self.skip_invalid:
            raise ImportDataError(report.problems)
        self.write([v for _, v in good], header, report)
        self.session.flush()
        return report

    def _parse_row(
        self, number: int, raw: dict[str, str], header: list[str]
    ) -> tuple[list[str], dict[str, Any]]:
        problems: list[str] = []
        values: dict[str, Any] = {}
        if raw.pop("__extra__", None):
            problems.append(f"row {number}: more cells than the header has columns (a stray comma?)")
        for col in header:
            value = raw.get(col, "")
            control = control_character_problem(value)
            if control:
                problems.append(f"row {number}, column {col}: value {value!r}: {control}")
                continue
            if not value:
                if col in self.required:
                    problems.append(f"row {number}, column {col}: value '': required, must not be empty")
                values[col] = None
                continue
            parser = self.parsers.get(col)
            try:
                values[col] = parser(value) if parser else _text(value, col)
            except FieldProblem as exc:
                problems.append(f"row {number}, column {col}: value {value!r}: {exc}")
        return problems, values

    def _load_customers(self, external_ids: list[str]) -> None:
        ids = sorted(set(external_ids))
        for start in range(0, len(ids), _CHUNK):
            for customer in self.session.scalars(
                select(Customer).where(
                    Customer.center_id == self.center.id,
                    Customer.external_id.in_(ids[start : start + _CHUNK]),
                )
            ):
                self._customers[customer.external_id] = customer

    def customer_problem(self, number: int, values: dict[str, Any]) -> str | None:
        ext = values["customer_external_id"]
        if ext not in self._customers:
            return (
                f"row {number}, column customer_external_id: value {ext!r}: no such customer in center "
                f"{self.center.code}; import the customer first"
            )
        return None

    def check_row(self, number: int, values: dict[str, Any]) -> list[str]:
        """Checks that need the database or several fields of one row."""
        raise NotImplementedError

    def check_together(
        self, rows: list[tuple[int, dict[str, Any]]], report: ImportReport
    ) -> list[tuple[int, dict[str, Any]]]:
        """Checks across rows (duplicates); returns the rows still good."""
        seen: dict[tuple[Any, ...], int] = {}
        good = []
        for number, values in rows:
            key = self.key(values)
            if key in seen:
                first = seen[key]
                report.problems.append(
                    f"row {number}, column {self.key_column}: value {str(values[self.key_column])!r}: "
                    f"duplicate of row {first} (same {', '.join(self.key_names)})"
                )
                report.skipped_rows.append(number)
                continue
            seen[key] = number
            good.append((number, values))
        return good

    key_column: ClassVar[str]
    key_names: ClassVar[tuple[str, ...]]

    def key(self, values: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(values.get(k) for k in self.key_names)

    def write(self, rows: list[dict[str, Any]], header: list[str], report: ImportReport) -> None:
        raise NotImplementedError


def _count(report: ImportReport, *, created: bool, changed: bool) -> None:
    if created:
        report.created += 1
    elif changed:
        report.updated += 1
    else:
        report.unchanged += 1


def _text(value: str, col: str) -> str:
    """Free text (model, customer_external_id) must fit its column; PostgreSQL would refuse it."""
    if len(value) > 100:
        raise FieldProblem("too long; at most 100 characters")
    return value


def _row_number(problem: str) -> int:
    match = re.match(r"row (\d+)", problem)
    return int(match.group(1)) if match else 0


@dataclass
class VehicleImporter(_RecordImporter):
    """``careflow import vehicles``: one row per vehicle, matched by (customer, plate)."""

    columns: ClassVar[tuple[str, ...]] = VEHICLE_COLUMNS
    required: ClassVar[tuple[str, ...]] = ("customer_external_id", "plate")
    parsers: ClassVar[dict[str, Callable[[str], Any]]] = {
        "plate": parse_plate,
        "vin": parse_vin,
        "purchase_date": parse_date,
        "warranty_end": parse_date,
        "interval_months": whole_number(1, 60, "months"),
        "interval_km": whole_number(500, 100_000, "km"),
    }
    key_column: ClassVar[str] = "plate"
    key_names: ClassVar[tuple[str, ...]] = ("customer_external_id", "plate")

    def check_row(self, number: int, values: dict[str, Any]) -> list[str]:
        problems = [p for p in (self.customer_problem(number, values),) if p]
        bought, warranty = values.get("purchase_date"), values.get("warranty_end")
        if bought and bought > self.today:
            problems.append(f"row {number}, column purchase_date: value '{bought}': is in the future")
        if bought and warranty and warranty < bought:
            problems.append(
                f"row {number}, column warranty_end: value '{warranty}': before the purchase date {bought}"
            )
        return problems

    def write(self, rows: list[dict[str, Any]], header: list[str], report: ImportReport) -> None:
        wanted = [(self._customers[r["customer_external_id"]].id, r["plate"]) for r in rows]
        existing: dict[tuple[int, str], Vehicle] = {}
        for start in range(0, len(wanted), _CHUNK):
            for vehicle in self.session.scalars(
                select(Vehicle).where(
                    tuple_(Vehicle.customer_id, Vehicle.plate).in_(wanted[start : start + _CHUNK])
                )
            ):
                existing[(vehicle.customer_id, vehicle.plate)] = vehicle
        touched: list[Vehicle] = []
        for done, ((customer_id, plate), values) in enumerate(zip(wanted, rows, strict=True), start=1):
            tick(self.progress, "writing", done, len(rows))
            found = existing.get((customer_id, plate))
            if found is None:
                vehicle = Vehicle(customer_id=customer_id, plate=plate)
                self.session.add(vehicle)
            else:
                vehicle = found
            # Columns absent from the file leave the vehicle as it was.
            changed = [
                col for col in VEHICLE_COLUMNS[2:] if col in header and getattr(vehicle, col) != values[col]
            ]
            for col in changed:
                setattr(vehicle, col, values[col])
            _count(report, created=found is None, changed=bool(changed))
            touched.append(vehicle)
        self.session.flush()
        refresh_service_due(self.session, (v.id for v in touched))


@dataclass
class VisitImporter(_RecordImporter):
    """``careflow import visits``: matched by (customer, plate, date, kind); earns points; uses vouchers."""

    points: PointsRules | None = None
    columns: ClassVar[tuple[str, ...]] = VISIT_COLUMNS
    required: ClassVar[tuple[str, ...]] = ("customer_external_id", "plate", "date", "kind")
    parsers: ClassVar[dict[str, Callable[[str], Any]]] = {
        "plate": parse_plate,
        "date": parse_date,
        "mileage": whole_number(0, 3_000_000, "km"),
        "amount": parse_amount,
        "kind": parse_kind,
        "voucher_code": parse_voucher_code,
    }
    key_column: ClassVar[str] = "date"
    key_names: ClassVar[tuple[str, ...]] = ("customer_external_id", "plate", "date", "kind")
    _vehicles: dict[tuple[int, str], Vehicle] = field(default_factory=dict)
    _vehicles_loaded: bool = False

    def check_row(self, number: int, values: dict[str, Any]) -> list[str]:
        problem = self.customer_problem(number, values)
        if problem:
            return [problem]
        customer = self._customers[values["customer_external_id"]]
        vehicle = self._vehicle(customer.id, values["plate"])
        problems = []
        if vehicle is None:
            problems.append(
                f"row {number}, column plate: value {values['plate']!r}: customer {customer.external_id} has "
                "no vehicle with this plate; import it with 'careflow import vehicles' first"
            )
        if values["date"] > self.today:
            problems.append(f"row {number}, column date: value '{values['date']}': is in the future")
        return problems

    def _vehicle(self, customer_id: int, plate: str) -> Vehicle | None:
        if not self._vehicles_loaded:
            # One query per 5,000 customers instead of one per row.
            ids = sorted(c.id for c in self._customers.values())
            for start in range(0, len(ids), _CHUNK):
                for vehicle in self.session.scalars(
                    select(Vehicle).where(Vehicle.customer_id.in_(ids[start : start + _CHUNK]))
                ):
                    self._vehicles[(vehicle.customer_id, vehicle.plate)] = vehicle
            self._vehicles_loaded = True
        return self._vehicles.get((customer_id, plate))

    def check_together(
        self, rows: list[tuple[int, dict[str, Any]]], report: ImportReport
    ) -> list[tuple[int, dict[str, Any]]]:
        rows = super().check_together(rows, report)
        maintenance_days: dict[int, set[date]] = {}
        for _, values in rows:
            if values["kind"] == MAINTENANCE:
                customer_id = self._customers[values["customer_external_id"]].id
                maintenance_days.setdefault(customer_id, set()).add(values["date"])
        good = []
        used_in_file: dict[str, int] = {}
        for number, values in rows:
            code = values.get("voucher_code")
            if code:
                problem = self._voucher_problem(number, values, code, used_in_file, maintenance_days)
                if problem:
                    report.problems.append(problem)
                    report.skipped_rows.append(number)
                    continue
                used_in_file[code] = number
            good.append((number, values))
        return good

    def _voucher_problem(
        self,
        number: int,
        values: dict[str, Any],
        code: str,
        used_in_file: dict[str, int],
        maintenance_days: dict[int, set[date]],
    ) -> str | None:
        where = f"row {number}, column voucher_code: value {code!r}"
        if code in used_in_file:
            return f"{where}: already used on row {used_in_file[code]} of this file"
        customer = self._customers[values["customer_external_id"]]
        vehicle = self._vehicle(customer.id, values["plate"])
        assert vehicle is not None
        existing = self._existing_visit(customer.id, vehicle.id, values["date"], values["kind"])
        others = frozenset(maintenance_days.get(customer.id, set()) - {values["date"]})
        try:
            check_voucher(
                self.session,
                code,
                VisitForVoucher(
                    customer.id, values["date"], values["kind"], existing.id if existing else None
                ),
                other_maintenance_days=others,
            )
        except PointsError as exc:
            return f"{where}: {exc}"
        return None

    def _existing_visit(self, customer_id: int, vehicle_id: int, day: date, kind: str) -> ServiceVisit | None:
        return self.session.scalar(
            select(ServiceVisit).where(
                ServiceVisit.customer_id == customer_id,
                ServiceVisit.vehicle_id == vehicle_id,
                ServiceVisit.date == day,
                ServiceVisit.kind == kind,
            )
        )

    def write(self, rows: list[dict[str, Any]], header: list[str], report: ImportReport) -> None:
        existing = self._visits_of(sorted({self._customers[r["customer_external_id"]].id for r in rows}))
        touched: set[int] = set()
        written: list[ServiceVisit] = []
        voucher_changes: list[tuple[ServiceVisit, str | None]] = []
        with self.session.no_autoflush:  # one flush for the whole file, not one per row
            for done, values in enumerate(rows, start=1):
                tick(self.progress, "writing", done, len(rows))
                customer = self._customers[values["customer_external_id"]]
                vehicle = self._vehicle(customer.id, values["plate"])
                assert vehicle is not None
                visit = existing.get((customer.id, vehicle.id, values["date"], values["kind"]))
                created = visit is None
                if visit is None:
                    visit = ServiceVisit(
                        customer_id=customer.id,
                        vehicle_id=vehicle.id,
                        date=values["date"],
                        kind=values["kind"],
                    )
                    self.session.add(visit)
                changed = [c for c in ("mileage", "amount") if c in header and getattr(visit, c) != values[c]]
                for col in changed:
                    setattr(visit, col, values[col])
                new_voucher = "voucher_code" in header and visit.voucher_code != values["voucher_code"]
                if new_voucher:
                    voucher_changes.append((visit, values["voucher_code"]))
                _count(report, created=created, changed=bool(changed) or new_voucher)
                written.append(visit)
                touched.add(vehicle.id)
        self.session.flush()
        for visit, code in voucher_changes:  # already checked; now recorded
            release_voucher(self.session, visit.id)
            visit.voucher_code = code
            self.session.flush()
            if code:
                voucher = check_voucher(
                    self.session, code, VisitForVoucher(visit.customer_id, visit.date, visit.kind, visit.id)
                )
                use_voucher(voucher, visit)
        if self.points is not None:
            earn_for_visits(self.session, written, self.points)
        self.session.flush()
        refresh_service_due(self.session, touched)

    def _visits_of(self, customer_ids: list[int]) -> dict[tuple[int, int | None, date, str], ServiceVisit]:
        found: dict[tuple[int, int | None, date, str], ServiceVisit] = {}
        for start in range(0, len(customer_ids), _CHUNK):
            for visit in self.session.scalars(
                select(ServiceVisit).where(ServiceVisit.customer_id.in_(customer_ids[start : start + _CHUNK]))
            ):
                found[(visit.customer_id, visit.vehicle_id, visit.date, visit.kind)] = visit
        return found


def without_row_prefix(problem: str) -> str:
    """``row 2, column date: …`` -> ``date: …`` for a single record given on the command line."""
    return re.sub(r"^row \d+, (column )?", "", problem)
