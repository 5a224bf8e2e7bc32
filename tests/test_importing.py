"""`careflow import customers FILE.csv`: through the real CLI, checked against the real database."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from careflow.cli import base as cli
from careflow.cli import main
from careflow.config import load_settings
from careflow.storage.db import make_engine, make_session_factory
from careflow.storage.models import Consent, Customer

COLUMNS = [
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
]
HEADER = ",".join(COLUMNS)
TOMORROW = (date.today() + timedelta(days=1)).isoformat()


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CAREFLOW_* variable of the machine running the tests may change the configuration."""
    for name in list(os.environ):
        if name.startswith("CAREFLOW_"):
            monkeypatch.delenv(name)


def _init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *init_args: str, database_url: str | None = None
) -> Path:
    _clean_environment(monkeypatch)
    if database_url is not None:
        monkeypatch.setenv("CAREFLOW_DATABASE__URL", database_url)
    monkeypatch.chdir(tmp_path)
    # Rich wraps long lines at 80 columns when not on a terminal; one problem per line is what
    # these tests read.
    monkeypatch.setattr(cli.out, "soft_wrap", True)
    monkeypatch.setattr(cli.err, "soft_wrap", True)
    result = CliRunner().invoke(main, ["init", *init_args])
    assert result.exit_code == 0, result.output
    return tmp_path


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory after `careflow init`: careflow.toml and a migrated SQLite database."""
    return _init(tmp_path, monkeypatch)


@pytest.fixture
def any_db_workspace(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`careflow init` on SQLite, and again on the real PostgreSQL server."""
    return _init(tmp_path, monkeypatch, database_url=db_url)


def row(**values: str) -> dict[str, str]:
    """A valid customer row; keyword arguments replace single cells."""
    base = {
        "external_id": "C1",
        "name": "Li Lei",
        "phone": "13800138000",
        "email": "lilei@example.com",
        "birthday": "1990-05-01",
        "locale": "zh_CN",
        "timezone": "Asia/Shanghai",
        "city": "Beijing",
        "sms_consent": "yes",
        "email_consent": "no",
    }
    base.update(values)
    return base


def write_csv(
    name: str, rows: list[dict[str, str]], columns: list[str] = COLUMNS, encoding: str = "utf-8"
) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = Path(name)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def write_lines(name: str, *lines: str) -> Path:
    path = Path(name)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_import(path: Path, *options: str) -> Result:
    return CliRunner().invoke(main, ["import", "customers", str(path), *options])


def problems(result: Result) -> list[str]:
    """The 'row N, ...' lines the import printed."""
    return [line for line in result.stderr.splitlines() if line.startswith("row ")]


@dataclass(frozen=True)
class Card:
    id: int
    name: str
    phone: str | None
    email: str | None
    birthday: tuple[int | None, int | None, int | None]
    locale: str | None
    timezone: str | None
    city: str | None
    consents: dict[tuple[str, str], bool]


def cards() -> dict[str, Card]:
    """Every customer card in the database of the working directory's careflow.toml."""
    engine = make_engine(load_settings().database.url)
    try:
        with make_session_factory(engine)() as session:
            found = {}
            for c in session.scalars(select(Customer).order_by(Customer.id)):
                consents = {
                    (k.channel, k.purpose): k.granted
                    for k in session.scalars(select(Consent).where(Consent.customer_id == c.id))
                }
                found[c.external_id] = Card(
                    id=c.id,
                    name=c.name,
                    phone=c.phone,
                    email=c.email,
                    birthday=(c.birth_year, c.birth_month, c.birth_day),
                    locale=c.locale,
                    timezone=c.timezone,
                    city=c.city,
                    consents=consents,
                )
            return found
    finally:
        engine.dispose()


def consent_count() -> int:
    engine = make_engine(load_settings().database.url)
    try:
        with make_session_factory(engine)() as session:
            return int(session.scalar(select(func.count()).select_from(Consent)) or 0)
    finally:
        engine.dispose()


def granted(sms: bool, email: bool) -> dict[tuple[str, str], bool]:
    return {
        ("sms", "service"): sms,
        ("sms", "marketing"): sms,
        ("email", "service"): email,
        ("email", "marketing"): email,
    }


# --- a good file ------------------------------------------------------------------------------


def test_good_file_imports_every_field(any_db_workspace: Path) -> None:
    path = write_csv(
        "customers.csv",
        [
            row(external_id="C1", name="张三", phone="13800138000", city="上海", birthday="1990-05-01"),
            row(
                external_id="C2",
                name="Oliver Smith",
                phone="+44 7911 123456",
                email="Oliver@Example.COM",
                birthday="02-29",
                locale="en-GB",
                timezone="Europe/London",
                city="London",
                sms_consent="no",
                email_consent="yes",
            ),
            row(external_id="C3", name="王芳", phone="", email="", birthday="12-31", city=""),
        ],
    )

    result = run_import(path)

    assert result.exit_code == 0, result.output
    assert "created 3, updated 0, unchanged 0, skipped 0" in result.stdout
    found = cards()
    assert list(found) == ["C1", "C2", "C3"]
    zhang = found["C1"]
    assert (zhang.name, zhang.city) == ("张三", "上海")
    assert zhang.phone == "+8613800138000"
    assert zhang.email == "lilei@example.com"
    assert zhang.birthday == (1990, 5, 1)
    assert (zhang.locale, zhang.timezone) == ("zh_CN", "Asia/Shanghai")
    assert zhang.consents == granted(sms=True, email=False)
    oliver = found["C2"]
    assert oliver.phone == "+447911123456"
    assert oliver.email == "Oliver@example.com"  # the domain is normalised, the local part kept
    assert oliver.birthday == (None, 2, 29)
    assert (oliver.locale, oliver.timezone, oliver.city) == ("en_GB", "Europe/London", "London")
    assert oliver.consents == granted(sms=False, email=True)
    wang = found["C3"]
    assert (wang.name, wang.phone, wang.email, wang.city) == ("王芳", None, None, None)
    assert wang.birthday == (None, 12, 31)


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("13800138000", "+8613800138000"),
        ("138 0013 8000", "+8613800138000"),
        ("138-0013-8000", "+8613800138000"),
        ("+86 138 0013 8000", "+8613800138000"),
        ("+44 7911 123456", "+447911123456"),
        ("+1 (212) 555-0123", "+12125550123"),
    ],
)
def test_phone_numbers_are_stored_in_e164(workspace: Path, written: str, stored: str) -> None:
    result = run_import(write_csv("c.csv", [row(phone=written)]))

    assert result.exit_code == 0, result.output
    assert cards()["C1"].phone == stored


def test_numbers_without_plus_use_the_centers_region(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _init(tmp_path, monkeypatch, "--locale", "en_GB", "--timezone", "Europe/London")
    path = write_csv(
        "c.csv", [row(external_id="UK", phone="07911 123456"), row(external_id="CN", phone="13800138000")]
    )

    result = run_import(path)

    assert result.exit_code == 1
    assert problems(result) == [
        "row 3, column phone: value '13800138000': not a valid phone number for region GB; "
        "write it as +<country code><number>"
    ]
    result = run_import(write_csv("uk.csv", [row(external_id="UK", phone="07911 123456")]))
    assert result.exit_code == 0, result.output
    assert cards()["UK"].phone == "+447911123456"


def test_a_center_with_locale_en_in_london_reads_uk_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The country comes from the time zone (Europe/London: GB), not from the locale (en)."""
    _init(tmp_path, monkeypatch, "--locale", "en", "--timezone", "Europe/London")

    result = run_import(write_csv("uk.csv", [row(external_id="UK", phone="07911 123456", locale="en")]))

    assert result.exit_code == 0, result.output
    assert cards()["UK"].phone == "+447911123456"


def test_the_configured_country_wins_over_the_time_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _init(tmp_path, monkeypatch, "--timezone", "Asia/Shanghai", "--country", "HK")

    result = run_import(write_csv("hk.csv", [row(external_id="HK", phone="5123 4567")]))

    assert result.exit_code == 0, result.output
    assert cards()["HK"].phone == "+85251234567"


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("yes", True),
        ("YES", True),
        ("true", True),
        ("1", True),
        ("no", False),
        ("false", False),
        ("0", False),
    ],
)
def test_consent_words(workspace: Path, word: str, expected: bool) -> None:
    result = run_import(write_csv("c.csv", [row(sms_consent=word, email_consent=word)]))

    assert result.exit_code == 0, result.output
    assert cards()["C1"].consents == granted(sms=expected, email=expected)


# --- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "why"),
    [
        ("phone", "12345", "not a valid phone number for region CN"),
        ("phone", "call me", "not a phone number"),
        ("phone", "+44 7911", "not a valid phone number"),
        ("email", "bob@", "not a valid e-mail address"),
        ("email", "bob.example.com", "not a valid e-mail address"),
        ("birthday", "2023-02-29", "not a real date"),
        ("birthday", "13-01", "not a real date"),
        ("birthday", "02-30", "not a real date"),
        ("birthday", TOMORROW, "birthday is in the future"),
        ("birthday", "May 1st", "expected YYYY-MM-DD or MM-DD"),
        ("locale", "xx_QQ", "unknown locale"),
        ("timezone", "Mars/Olympus", "unknown time zone"),
        ("timezone", "America", "unknown time zone"),  # a tzdata directory, once a crash
        ("sms_consent", "maybe", "expected yes/no, true/false or 1/0"),
        ("email_consent", "maybe", "expected yes/no, true/false or 1/0"),
        ("external_id", "", "required, must not be empty"),
        ("name", "", "required, must not be empty"),
        ("name", "N" * 201, "too long; at most 200 characters"),
        ("city", "C" * 101, "too long; at most 100 characters"),
    ],
)
def test_bad_value_is_reported_by_row_column_and_value(
    workspace: Path, column: str, value: str, why: str
) -> None:
    path = write_csv("c.csv", [row(external_id="GOOD"), row(**{"external_id": "BAD", column: value})])

    result = run_import(path)

    assert result.exit_code == 1
    lines = problems(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"row 3, column {column}: value '{value}': {why}"), lines[0]
    assert "nothing imported: 1 problem(s)" in result.stderr
    assert cards() == {}  # not even the good row


def test_duplicate_external_id_in_one_file(workspace: Path) -> None:
    path = write_csv(
        "c.csv", [row(external_id="A1"), row(external_id="B2"), row(external_id="A1", name="Other")]
    )

    result = run_import(path)

    assert result.exit_code == 1
    assert problems(result) == ["row 4, column external_id: value 'A1': duplicate of row 2"]
    assert cards() == {}


def test_row_with_more_cells_than_the_header(workspace: Path) -> None:
    path = write_lines(
        "c.csv",
        HEADER,
        "C1,Li Lei,13800138000,lilei@example.com,1990-05-01,zh_CN,Asia/Shanghai,Beijing,yes,no",
        "C2,Han Meimei,13900139000,han@example.com,1991-06-02,zh_CN,Asia/Shanghai,Bei,jing,yes,no",
    )

    result = run_import(path)

    assert result.exit_code == 1
    lines = problems(result)
    assert lines[0] == "row 3: more cells than the header has columns (a stray comma?)"
    # The cells after the stray comma are shifted; what that breaks is reported for row 3 too.
    assert all(line.startswith("row 3") for line in lines)
    assert cards() == {}


def test_row_with_an_extra_trailing_cell(workspace: Path) -> None:
    path = write_lines(
        "c.csv",
        HEADER,
        "C1,Li Lei,13800138000,lilei@example.com,1990-05-01,zh_CN,Asia/Shanghai,Beijing,yes,no,oops",
    )

    result = run_import(path)

    assert result.exit_code == 1
    assert problems(result) == ["row 2: more cells than the header has columns (a stray comma?)"]
    assert cards() == {}


def test_unknown_column_is_an_error_naming_it(workspace: Path) -> None:
    path = write_lines("c.csv", "external_id,name,nickname", "C1,Li Lei,Lily")

    result = run_import(path)

    assert result.exit_code == 1
    assert len(problems(result)) == 1
    assert problems(result)[0].startswith("row 1, column nickname: unknown column")
    assert cards() == {}


def test_missing_required_column_is_an_error_naming_it(workspace: Path) -> None:
    path = write_lines("c.csv", "external_id,phone", "C1,13800138000")

    result = run_import(path)

    assert result.exit_code == 1
    assert problems(result) == ["row 1: required column 'name' is missing"]
    assert cards() == {}


def test_every_problem_in_the_file_is_reported(workspace: Path) -> None:
    path = write_csv(
        "c.csv",
        [
            row(external_id="C1"),
            row(external_id="C2", phone="12345", email="nope"),
            row(external_id="C3"),
            row(external_id="C4", birthday="2023-02-29", sms_consent="maybe"),
            row(external_id="", timezone="Mars/Olympus"),
        ],
    )

    result = run_import(path)

    assert result.exit_code == 1
    found = [line.split(": value")[0] for line in problems(result)]
    assert found == [
        "row 3, column phone",
        "row 3, column email",
        "row 5, column birthday",
        "row 5, column sms_consent",
        "row 6, column external_id",
        "row 6, column timezone",
    ]
    assert "nothing imported: 6 problem(s)" in result.stderr
    assert cards() == {}


def test_an_invalid_row_writes_nothing_at_all(any_db_workspace: Path) -> None:
    first = run_import(write_csv("first.csv", [row(external_id="OLD", name="Before", city="Beijing")]))
    assert first.exit_code == 0, first.output
    before = cards()
    consents_before = consent_count()
    path = write_csv(
        "c.csv",
        [
            row(external_id="OLD", name="After", city="Shanghai", sms_consent="no"),
            row(external_id="NEW1"),
            row(external_id="NEW2", email="not-an-address"),
        ],
    )

    result = run_import(path)

    assert result.exit_code == 1
    assert "nothing imported" in result.stderr
    assert "created" not in result.stdout
    assert cards() == before
    assert consent_count() == consents_before


# --- --skip-invalid ---------------------------------------------------------------------------


def test_skip_invalid_keeps_the_good_rows_and_reports_the_bad(any_db_workspace: Path) -> None:
    path = write_csv(
        "c.csv",
        [
            row(external_id="C1"),
            row(external_id="C2", phone="12345"),
            row(external_id="C3", name="王芳"),
            row(external_id="C4", birthday="13-01"),
        ],
    )

    result = run_import(path, "--skip-invalid")

    assert result.exit_code == 1
    assert [line.split(": value")[0] for line in problems(result)] == [
        "row 3, column phone",
        "row 5, column birthday",
    ]
    assert "created 2, updated 0, unchanged 0, skipped 2 invalid row(s)" in result.stdout
    found = cards()
    assert sorted(found) == ["C1", "C3"]
    assert found["C3"].name == "王芳"
    assert found["C3"].consents == granted(sms=True, email=False)


def test_skip_invalid_still_refuses_a_file_with_a_bad_header(workspace: Path) -> None:
    path = write_lines("c.csv", "external_id,name,nickname", "C1,Li Lei,Lily")

    result = run_import(path, "--skip-invalid")

    assert result.exit_code == 1
    assert problems(result)[0].startswith("row 1, column nickname: unknown column")
    assert cards() == {}


# --- characters no database or card can hold ----------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "found"),
    [
        ("name", "Li\x00Lei", "U+0000 at position 3"),
        ("city", "Shang\x1b[31mhai", "U+001B at position 6"),
        ("name", "Li\x85Lei", "U+0085 at position 3"),
    ],
)
def test_a_control_character_in_a_cell_is_a_row_and_column_error(
    any_db_workspace: Path, column: str, value: str, found: str
) -> None:
    """A NUL crashed the whole import on PostgreSQL with a traceback; now it is the row's error."""
    rows = [row(external_id="C1"), row(external_id="C2", **{column: value}), row(external_id="C3")]
    path = write_csv("c.csv", rows)

    result = run_import(path)

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert problems(result) == [
        f"row 3, column {column}: value {value!r}: contains the control character {found}; "
        "remove it (it is invisible in most editors)"
    ]
    assert cards() == {}

    result = run_import(path, "--skip-invalid")

    assert result.exit_code == 1
    assert "created 2, updated 0, unchanged 0, skipped 1 invalid row(s)" in result.stdout
    assert sorted(cards()) == ["C1", "C3"]


# --- re-import --------------------------------------------------------------------------------


def test_reimport_updates_customers_by_external_id(any_db_workspace: Path) -> None:
    first = run_import(
        write_csv("c.csv", [row(external_id="C1"), row(external_id="C2", phone="13900139000")])
    )
    assert first.exit_code == 0, first.output
    ids = {ext: card.id for ext, card in cards().items()}

    result = run_import(
        write_csv(
            "c2.csv",
            [
                row(external_id="C1", name="Li Lei (VIP)", phone="+8613700137000"),
                row(external_id="C2", city="Shenzhen", birthday="03-15"),
            ],
        )
    )

    assert result.exit_code == 0, result.output
    assert "created 0, updated 2" in result.stdout
    found = cards()
    assert {ext: card.id for ext, card in found.items()} == ids
    assert (found["C1"].name, found["C1"].phone) == ("Li Lei (VIP)", "+8613700137000")
    assert (found["C2"].city, found["C2"].birthday) == ("深圳", (None, 3, 15))  # cities stored canonical


def test_reimport_counts_created_and_updated(workspace: Path) -> None:
    assert run_import(write_csv("a.csv", [row(external_id="C1")])).exit_code == 0

    result = run_import(write_csv("b.csv", [row(external_id="C1", city="Shenzhen"), row(external_id="C2")]))

    assert result.exit_code == 0, result.output
    assert "created 1, updated 1" in result.stdout
    assert sorted(cards()) == ["C1", "C2"]


def test_reimporting_an_unchanged_file_counts_its_rows_unchanged(any_db_workspace: Path) -> None:
    rows = [row(external_id="C1", birthday="03-15"), row(external_id="C2", name="王芳", email="")]
    assert run_import(write_csv("a.csv", rows)).exit_code == 0

    result = run_import(write_csv("a.csv", rows))

    assert result.exit_code == 0, result.output
    assert "created 0, updated 0, unchanged 2, skipped 0 invalid row(s)" in result.stdout

    # One consent differs: that card is updated, the other still unchanged.
    result = run_import(write_csv("b.csv", [rows[0], {**rows[1], "email_consent": "yes"}]))

    assert result.exit_code == 0, result.output
    assert "created 0, updated 1, unchanged 1, skipped 0 invalid row(s)" in result.stdout
    assert cards()["C2"].consents == granted(sms=True, email=True)


def test_a_column_absent_from_a_reimport_leaves_the_field_unchanged(workspace: Path) -> None:
    full = row(external_id="C1", email="lilei@example.com", birthday="1990-05-01", email_consent="yes")
    assert run_import(write_csv("full.csv", [full])).exit_code == 0
    before = cards()["C1"]

    result = run_import(write_lines("partial.csv", "external_id,name,city", "C1,Li Lei,Hangzhou"))

    assert result.exit_code == 0, result.output
    assert "created 0, updated 1" in result.stdout
    after = cards()["C1"]
    assert after.city == "杭州"  # cities stored canonical (careflow.customers.cities)
    assert (after.phone, after.email, after.birthday) == (before.phone, before.email, before.birthday)
    assert (after.locale, after.timezone) == (before.locale, before.timezone)
    assert after.consents == granted(sms=True, email=True)


def test_an_empty_cell_in_a_present_column_clears_the_field(workspace: Path) -> None:
    assert run_import(write_csv("full.csv", [row(city="Beijing", birthday="1990-05-01")])).exit_code == 0

    result = run_import(write_lines("clear.csv", "external_id,name,city,birthday", "C1,Li Lei,,"))

    assert result.exit_code == 0, result.output
    assert (cards()["C1"].city, cards()["C1"].birthday) == (None, (None, None, None))


def test_consent_changed_to_no_on_reimport_is_withdrawn(any_db_workspace: Path) -> None:
    assert run_import(write_csv("a.csv", [row(sms_consent="yes", email_consent="yes")])).exit_code == 0
    assert cards()["C1"].consents == granted(sms=True, email=True)

    result = run_import(write_csv("b.csv", [row(sms_consent="no", email_consent="yes")]))

    assert result.exit_code == 0, result.output
    assert cards()["C1"].consents == granted(sms=False, email=True)
    assert consent_count() == 4  # changed in place, not duplicated


# --- progress and rate ------------------------------------------------------------------------


def test_piped_output_has_no_progress_bar_and_ends_with_the_rate(workspace: Path) -> None:
    result = run_import(write_csv("c.csv", [row(external_id=f"C{i}") for i in range(3)]))

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        "read c.csv as UTF-8 (detected)",
        "created 3, updated 0, unchanged 0, skipped 0 invalid row(s)",
    ]
    assert re.fullmatch(r"imported 3 rows in \d+\.\d s, [\d,]+ rows/s", lines[2]), lines
    assert len(lines) == 3
    assert "\x1b" not in result.output  # no terminal control sequences in a pipe


def test_a_terminal_shows_progress_per_thousand_rows(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from careflow.cli.commands import records
    from careflow.customers.import_customers import Progress

    screen = io.StringIO()
    monkeypatch.setattr(records, "out", Console(file=screen, force_terminal=True, width=100))
    calls: list[tuple[str, int, int]] = []
    real = records._progress

    @contextlib.contextmanager
    def counted(*, enabled: bool) -> Iterator[Progress | None]:
        with real(enabled=enabled) as update:
            assert update is not None

            def both(step: str, done: int, total: int) -> None:
                calls.append((step, done, total))
                update(step, done, total)

            yield both

    monkeypatch.setattr(records, "_progress", counted)

    result = run_import(write_csv("c.csv", [row(external_id=f"C{i}", phone="") for i in range(2_500)]))

    assert result.exit_code == 0, result.output
    # Once per thousand rows and at the end of each step, never once per row.
    assert calls == [
        ("checking", 1_000, 2_500),
        ("checking", 2_000, 2_500),
        ("checking", 2_500, 2_500),
        ("writing", 1_000, 2_500),
        ("writing", 2_000, 2_500),
        ("writing", 2_500, 2_500),
    ]
    shown = screen.getvalue()
    assert "rows" in shown and "2500/2500" in shown
    assert "imported 2,500 rows in " in shown


# --- encodings --------------------------------------------------------------------------------


def test_excel_utf8_with_bom_and_crlf(workspace: Path) -> None:
    text = HEADER + "\r\n" + "C1,张三,13800138000,,1990-05-01,zh_CN,Asia/Shanghai,上海,yes,no\r\n"
    Path("excel.csv").write_bytes(text.encode("utf-8-sig"))

    result = run_import(Path("excel.csv"))

    assert result.exit_code == 0, result.output
    card = cards()["C1"]
    assert (card.name, card.city, card.phone) == ("张三", "上海", "+8613800138000")
    assert card.consents == granted(sms=True, email=False)


def test_excel_utf8_without_bom_is_read_and_said_so(workspace: Path) -> None:
    result = run_import(write_csv("c.csv", [row(name="张三")]))

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "read c.csv as UTF-8 (detected)"


GBK_ROWS = [
    row(external_id="C1", name="欧阳娜娜", city="上海"),
    row(external_id="C2", name="李小龙", city="深圳市"),
    row(external_id="C3", name="王芳", city="北京"),
]


def test_a_gbk_file_from_chinese_excel_is_read_as_gb18030(any_db_workspace: Path) -> None:
    """Excel on a Chinese Windows saves plain "CSV" in GBK; those bytes are not UTF-8."""
    path = write_csv("gbk.csv", GBK_ROWS, encoding="gbk")
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")

    result = run_import(path)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "read gbk.csv as GB18030 (detected)"
    assert [(c.name, c.city) for c in cards().values()] == [
        ("欧阳娜娜", "上海"),
        ("李小龙", "深圳"),  # 深圳市 as written, kept in the canonical form weather alerts use
        ("王芳", "北京"),
    ]


def test_a_one_line_gbk_file_is_read_in_the_centers_code_page(workspace: Path) -> None:
    """Four Chinese characters alone are as plausible Korean (cp949): the center is in China."""
    path = write_lines("one.csv", "external_id,name")
    path.write_bytes("external_id,name\nC1,欧阳娜娜\n".encode("gbk"))

    result = run_import(path)

    assert result.exit_code == 0, result.output
    assert "read one.csv as GB18030 (detected)" in result.stdout
    assert cards()["C1"].name == "欧阳娜娜"


def test_excel_unicode_text_is_tab_separated_utf16(workspace: Path) -> None:
    text = "external_id\tname\tcity\tphone\r\nC1\t张三\t上海\t13800138000\r\nC2\tEmma\tLondon\t\r\n"
    Path("unicode.txt").write_bytes(text.encode("utf-16"))  # with its byte order mark, as Excel writes

    result = run_import(Path("unicode.txt"))

    assert result.exit_code == 0, result.output
    assert "read unicode.txt as UTF-16 (detected)" in result.stdout
    assert [(c.name, c.city, c.phone) for c in cards().values()] == [
        ("张三", "上海", "+8613800138000"),
        ("Emma", "London", None),
    ]


def test_a_semicolon_separated_file_is_read(workspace: Path) -> None:
    result = run_import(write_lines("eu.csv", "external_id;name;city", "C1;Müller;Köln"))

    assert result.exit_code == 0, result.output
    assert (cards()["C1"].name, cards()["C1"].city) == ("Müller", "Köln")


def test_the_encoding_can_be_named_and_a_wrong_one_is_a_clear_error(workspace: Path) -> None:
    path = write_csv("gbk.csv", GBK_ROWS, encoding="gbk")

    result = run_import(path, "--encoding", "utf-8")

    assert result.exit_code == 1
    assert "gbk.csv: line 2 is not UTF-8 text (byte 91); leave out --encoding to have it detected" in (
        result.stderr
    )
    assert "Traceback" not in result.output
    assert cards() == {}
    result = run_import(path, "--encoding", "klingon")
    assert result.exit_code == 1
    assert "gbk.csv: unknown encoding 'klingon'" in result.stderr

    result = run_import(path, "--encoding", "gbk")

    assert result.exit_code == 0, result.output
    assert "read gbk.csv as GBK (as given)" in result.stdout
    assert cards()["C1"].name == "欧阳娜娜"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(256)) * 8, "cannot tell which text encoding this file is in; save it as 'CSV UTF-8'"),
        (b"PK\x03\x04\x14\x00\x06\x00" + bytes(200), "an Excel workbook (.xlsx), not CSV; in Excel choose"),
    ],
)
def test_a_file_that_is_not_text_gets_a_clear_error(workspace: Path, content: bytes, message: str) -> None:
    Path("customers.xlsx").write_bytes(content)

    result = run_import(Path("customers.xlsx"))

    assert result.exit_code == 1
    assert f"customers.xlsx: {message}" in result.stderr
    assert "Traceback" not in result.output
    assert cards() == {}


def test_chinese_names_round_trip(workspace: Path) -> None:
    names = ["欧阳娜娜", "司马相如", "李小龙", "𠮷野家"]  # the last is outside the BMP
    path = write_csv("c.csv", [row(external_id=f"Z{i}", name=n) for i, n in enumerate(names)])

    result = run_import(path)

    assert result.exit_code == 0, result.output
    assert [card.name for card in cards().values()] == names


def test_a_file_with_only_a_header_imports_nothing_and_succeeds(workspace: Path) -> None:
    result = run_import(write_lines("c.csv", HEADER))

    assert result.exit_code == 0, result.output
    assert "created 0, updated 0" in result.stdout


def test_an_empty_file_is_an_error(workspace: Path) -> None:
    Path("empty.csv").write_text("", encoding="utf-8")

    result = run_import(Path("empty.csv"))

    assert result.exit_code == 1
    assert problems(result)[0].startswith("row 1: the file is empty")


def test_row_numbers_count_blank_lines_so_they_match_the_file(workspace: Path) -> None:
    path = write_lines("blank.csv", "external_id,name,phone", "A1,Alice,13800138000", "", "A2,Bob,12345")
    result = run_import(path)
    assert result.exit_code == 1
    assert "row 4, column phone: value '12345'" in result.output
