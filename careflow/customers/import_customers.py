"""Customer CSV import: every field validated, every problem reported by row and column, all or nothing."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from babel import Locale, UnknownLocaleError
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from careflow.countries import center_country
from careflow.customers.cities import MAX_LENGTH as CITY_MAX_LENGTH
from careflow.customers.cities import canonical_city
from careflow.customers.csv_files import CsvText, decode_csv, sniff_delimiter
from careflow.errors import ImportDataError
from careflow.policies.consent import IMPORT, record_consent
from careflow.storage.models import Center, Customer

CUSTOMER_COLUMNS = (
    "external_id",
    "name",
    "phone",
    "email",
    "birthday",
    "locale",
    "timezone",
    "city",
    "sms_consent",
    "email_consent",
    "whatsapp",
    "whatsapp_consent",
    "preferred_channel",
    "birthday_calendar",
)
# Consent columns: an empty cell means "no", unlike other columns where it means "unknown".
CONSENT_COLUMNS: dict[str, str] = {
    "sms_consent": "sms",
    "email_consent": "email",
    "whatsapp_consent": "whatsapp",
}
PREFERRED_CHANNELS = ("sms", "whatsapp", "email")
REQUIRED_COLUMNS = ("external_id", "name")
_TRUE = {"yes", "true", "1", "y"}
_FALSE = {"no", "false", "0", "n", ""}


class FieldProblem(ValueError):
    """A value that cannot be accepted; the message says what was expected."""


# (step, rows done, rows in all): called once per PROGRESS_EVERY rows, not per row.
Progress = Callable[[str, int, int], None]
PROGRESS_EVERY = 1_000


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0  # matched a record that already said exactly this
    skipped_rows: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Consents the file grants that stay withdrawn, because the customer withdrew them.
    kept_withdrawn: list[str] = field(default_factory=list)
    read_as: str | None = None  # how the file was read: "read c.csv as GB18030 (detected)"

    @property
    def written(self) -> int:
        """Rows imported: created, updated or found unchanged."""
        return self.created + self.updated + self.unchanged


def tick(progress: Progress | None, step: str, done: int, total: int) -> None:
    """Report progress at every PROGRESS_EVERY rows and at the end; cheap for the rows between."""
    if progress is not None and (done % PROGRESS_EVERY == 0 or done == total):
        progress(step, done, total)


# Control characters: PostgreSQL refuses NUL in text, and none belongs on a card or in an SMS.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def control_character_problem(value: str) -> str | None:
    """Why a cell cannot be stored as text, or None."""
    found = _CONTROL.search(value)
    if found is None:
        return None
    return (
        f"contains the control character U+{ord(found.group()):04X} at position {found.start() + 1}; "
        "remove it (it is invisible in most editors)"
    )


def read_csv_bytes(data: bytes, name: str, center: Center, encoding: str | None) -> CsvText:
    """A file's text; the center's country tells which legacy code page to try first."""
    return decode_csv(data, name, encoding=encoding, country=region_for(center))


def parse_phone(value: str, region: str | None) -> str:
    """A phone number in E.164, or FieldProblem saying why not; ``region``: where numbers without + are."""
    if region is None and not value.strip().startswith("+"):
        raise FieldProblem("no country to read a number without + in; write it as +<country code><number>")
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        raise FieldProblem(f"not a phone number ({exc})") from None
    if not phonenumbers.is_valid_number(number):
        if value.strip().startswith("+"):
            raise FieldProblem("not a valid phone number (wrong length or no such number range)")
        raise FieldProblem(
            f"not a valid phone number for region {region}; write it as +<country code><number>"
        )
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def parse_email(value: str) -> str:
    try:
        return str(validate_email(value, check_deliverability=False).normalized)
    except EmailNotValidError as exc:
        raise FieldProblem(f"not a valid e-mail address ({exc})") from None


def parse_city(value: str) -> str:
    """The ``city`` column: the canonical name (careflow.customers.cities), or why not."""
    name = canonical_city(value)
    if not name:
        raise FieldProblem("no letters of a city name")
    if len(name) > CITY_MAX_LENGTH:
        raise FieldProblem(f"too long; at most {CITY_MAX_LENGTH} characters")
    return name


def parse_preferred_channel(value: str) -> str:
    lowered = value.strip().lower().replace("-", "")
    if lowered in PREFERRED_CHANNELS:  # "e-mail" is accepted as "email"
        return lowered
    raise FieldProblem(f"unknown channel; expected one of {', '.join(PREFERRED_CHANNELS)} (or empty)")


def parse_birthday(value: str) -> tuple[int | None, int, int]:
    """``YYYY-MM-DD`` or ``MM-DD`` (Feb 29 allowed without a year)."""
    parts = value.split("-")
    try:
        if len(parts) == 3 and len(parts[0]) == 4:
            d = date(int(parts[0]), int(parts[1]), int(parts[2]))
        elif len(parts) == 2:
            month, day = int(parts[0]), int(parts[1])
            date(2000, month, day)  # a leap year, so 02-29 is accepted
            return None, month, day
        else:
            raise FieldProblem("expected YYYY-MM-DD or MM-DD")
    except FieldProblem:
        raise
    except ValueError:
        raise FieldProblem("not a real date; expected YYYY-MM-DD or MM-DD") from None
    # Checked outside the try: FieldProblem is a ValueError and would be reported as "not a real date".
    if d > date.today():
        raise FieldProblem("birthday is in the future")
    return d.year, d.month, d.day


def parse_lunar_birthday(value: str) -> tuple[int | None, int, int]:
    """A Chinese lunar birthday: ``YYYY-MM-DD`` or ``MM-DD`` with month 1-12 and day 1-30."""
    parts = value.split("-")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise FieldProblem("expected a lunar date as YYYY-MM-DD or MM-DD")
    year = int(parts[0]) if len(parts) == 3 else None
    month, day = int(parts[-2]), int(parts[-1])
    if not (1 <= month <= 12 and 1 <= day <= 30):
        raise FieldProblem("not a lunar date: the month must be 1-12 and the day 1-30")
    return year, month, day


def parse_calendar(value: str) -> str | None:
    """``lunar`` or ``solar`` (empty means solar); stored as "lunar" or None."""
    lowered = value.strip().lower()
    if lowered in ("", "solar", "gregorian"):
        return None
    if lowered == "lunar":
        return "lunar"
    raise FieldProblem("expected solar or lunar")


def parse_locale(value: str) -> str:
    normalized = value.replace("-", "_")
    try:
        Locale.parse(normalized)
    except (UnknownLocaleError, ValueError):
        raise FieldProblem("unknown locale; expected e.g. zh_CN or en") from None
    return normalized


def parse_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a tzdata directory: OSError
        raise FieldProblem("unknown time zone; expected an IANA name such as Asia/Shanghai") from None
    return value


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise FieldProblem("expected yes/no, true/false or 1/0")


def region_for(center: Center) -> str | None:
    """The country numbers written without + are read in: the center's (careflow.countries)."""
    return center.country or center_country(None, center.timezone, center.locale)


def read_rows(
    text: str, expected: Iterable[str], required: Iterable[str]
) -> tuple[list[str], list[dict[str, str]]]:
    """Parse the header and rows; an unknown or missing column is an error naming it.

    Comma-, tab- or semicolon-separated: the header line says which (Excel's "Unicode text" is
    tab-separated, and a European Excel's "CSV" uses semicolons).
    """
    expected_list = list(expected)
    text = text.lstrip("\ufeff")
    reader = csv.DictReader(io.StringIO(text), delimiter=sniff_delimiter(text, expected_list))
    header = [h.strip() for h in (reader.fieldnames or [])]
    problems = []
    if not header:
        raise ImportDataError(["row 1: the file is empty; expected a header row: " + ",".join(expected_list)])
    for col in header:
        if col not in expected_list:
            problems.append(f"row 1, column {col}: unknown column; expected only: {','.join(expected_list)}")
    seen = set()
    for col in header:
        if col in seen:
            problems.append(f"row 1, column {col}: the column appears twice")
        seen.add(col)
    for col in required:
        if col not in header:
            problems.append(f"row 1: required column {col!r} is missing")
    if problems:
        raise ImportDataError(problems)
    rows = []
    for raw in reader.reader:  # csv.reader skips blank lines, so take the row number from line_num
        if not any(cell.strip() for cell in raw):
            continue
        row = {col: (raw[i] if i < len(raw) else "").strip() for i, col in enumerate(header)}
        row["__line__"] = str(reader.reader.line_num)
        if len(raw) > len(header):  # more cells than header columns
            row["__extra__"] = "1"
        rows.append(row)
    return header, rows


Parser = Callable[[str], Any]


def _stored_length(col: str) -> int | None:
    """The length limit of the customers column ``col`` is stored in, if it has one."""
    column = Customer.__table__.columns.get(col)
    return getattr(column.type, "length", None) if column is not None else None


@dataclass
class CustomerImporter:
    session: Session
    center: Center
    skip_invalid: bool = False
    progress: Progress | None = None
    # Who or what the consent history names as having recorded the file's consents.
    actor: str | None = None

    def parsers(self) -> dict[str, Parser]:
        region = region_for(self.center)
        return {
            "phone": lambda v: parse_phone(v, region),
            "email": parse_email,
            "birthday": parse_birthday,
            "locale": parse_locale,
            "timezone": parse_timezone,
            "sms_consent": parse_bool,
            "email_consent": parse_bool,
            "whatsapp": lambda v: parse_phone(v.removeprefix("whatsapp:"), region),
            "whatsapp_consent": parse_bool,
            "preferred_channel": parse_preferred_channel,
            "birthday_calendar": parse_calendar,
            "city": parse_city,
        }

    def run(self, path: Path, encoding: str | None = None) -> ImportReport:
        return self.run_bytes(path.read_bytes(), path.name, encoding)

    def run_bytes(self, data: bytes, name: str, encoding: str | None = None) -> ImportReport:
        """Import a file's bytes, in ``encoding`` or the one detected (the report says which)."""
        self.actor = self.actor or f"import of {name}"
        decoded = read_csv_bytes(data, name, self.center, encoding)
        report = self.run_text(decoded.text)
        report.read_as = decoded.describe(name)
        return report

    def run_text(self, text: str) -> ImportReport:
        header, rows = read_rows(text, CUSTOMER_COLUMNS, REQUIRED_COLUMNS)
        report = ImportReport()
        parsed: list[tuple[int, dict[str, Any]]] = []
        first_row_of: dict[str, int] = {}
        parsers = self.parsers()
        for done, raw in enumerate(rows, start=1):
            tick(self.progress, "checking", done, len(rows))
            number = int(raw.pop("__line__"))  # the line in the file; row 1 is the header
            row_problems, values = self._parse_row(number, raw, header, parsers)
            ext = values.get("external_id")
            if ext and ext in first_row_of:
                row_problems.append(
                    f"row {number}, column external_id: value {ext!r}: duplicate of row {first_row_of[ext]}"
                )
            elif ext:
                first_row_of[ext] = number
            if row_problems:
                report.problems.extend(row_problems)
                report.skipped_rows.append(number)
                continue
            parsed.append((number, values))
        if report.problems and not self.skip_invalid:
            raise ImportDataError(report.problems)
        self._upsert([{**v, "__row__": n} for n, v in parsed], header, report)
        return report

    def _parse_row(
        self, number: int, raw: dict[str, str], header: list[str], parsers: dict[str, Parser]
    ) -> tuple[list[str], dict[str, Any]]:
        problems = []
        values: dict[str, Any] = {}
        if raw.pop("__extra__", None):
            problems.append(f"row {number}: more cells than the header has columns (a stray comma?)")
        for col in header:
            value = raw.get(col, "")
            control = control_character_problem(value)
            if control:
                problems.append(f"row {number}, column {col}: value {value!r}: {control}")
                continue
            if col in REQUIRED_COLUMNS and not value:
                problems.append(f"row {number}, column {col}: value '': required, must not be empty")
                continue
            parser = parsers.get(col)
            if col == "birthday" and raw.get("birthday_calendar", "").strip().lower() == "lunar":
                parser = parse_lunar_birthday
            if parser is None or (value == "" and col not in CONSENT_COLUMNS):
                # Text stored as written must fit its column (PostgreSQL would fail the whole import).
                limit = _stored_length(col)
                if limit is not None and len(value) > limit:
                    problems.append(
                        f"row {number}, column {col}: value {value!r}: too long; at most {limit} characters"
                    )
                    continue
                values[col] = value or None
                continue
            try:
                values[col] = parser(value)
            except FieldProblem as exc:
                problems.append(f"row {number}, column {col}: value {value!r}: {exc}")
        return problems, values

    def _upsert(self, rows: list[dict[str, Any]], header: list[str], report: ImportReport) -> None:
        ids = [r["external_id"] for r in rows]
        existing: dict[str, Customer] = {}
        for start in range(0, len(ids), 5_000):
            chunk = ids[start : start + 5_000]
            for customer in self.session.scalars(
                select(Customer).where(Customer.center_id == self.center.id, Customer.external_id.in_(chunk))
            ):
                existing[customer.external_id] = customer
        for done, values in enumerate(rows, start=1):
            tick(self.progress, "writing", done, len(rows))
            found = existing.get(values["external_id"])
            if found is None:
                customer = Customer(
                    center_id=self.center.id, external_id=values["external_id"], name=values["name"]
                )
                self.session.add(customer)
            else:
                customer = found
            changed = False
            # Columns absent from the file leave the card as it was.
            for col in (
                "name",
                "phone",
                "email",
                "locale",
                "timezone",
                "city",
                "whatsapp",
                "preferred_channel",
                "birthday_calendar",
            ):
                if col in header and getattr(customer, col) != values[col]:
                    setattr(customer, col, values[col])
                    changed = True
            if "birthday" in header:
                bday = values["birthday"] or (None, None, None)
                if (customer.birth_year, customer.birth_month, customer.birth_day) != bday:
                    customer.birth_year, customer.birth_month, customer.birth_day = bday
                    changed = True
            if customer.id is None:
                self.session.flush()  # consents need the new card's id
            for col, channel in CONSENT_COLUMNS.items():
                if col in header:
                    outcome = record_consent(
                        self.session,
                        customer.id,
                        channel,
                        granted=values[col],
                        source=IMPORT,
                        actor=self.actor,
                    )
                    changed |= bool(outcome)
                    if outcome.kept_withdrawn:
                        why = "; ".join(sorted(set(outcome.kept_withdrawn.values())))
                        purposes = ", ".join(sorted(outcome.kept_withdrawn))
                        report.kept_withdrawn.append(
                            f"row {values['__row__']}, column {col}: customer {customer.external_id}: "
                            f"{channel} consent ({purposes}) stays withdrawn: {why}; only the "
                            "customer's own re-consent lifts it (careflow consent grant)"
                        )
            if found is None:
                report.created += 1
            elif changed:
                report.updated += 1
            else:
                report.unchanged += 1
