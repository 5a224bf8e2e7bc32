"""Vehicle and visit import: row/column errors, all or nothing, upsert by key, derived fields kept current."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from careflow.cli import main
from careflow.customers.import_records import VehicleImporter, VisitImporter
from careflow.customers.points import PointsRules, redeem
from careflow.errors import ImportDataError
from careflow.runtime import Runtime
from careflow.storage.models import Center, PointsEntry, ServiceVisit, Vehicle, Voucher
from careflow.testing import add_customer, build_runtime, make_settings

TODAY = date(2026, 6, 1)
VEHICLES = """customer_external_id,plate,vin,model,purchase_date,warranty_end,interval_months,interval_km
C1,沪A 12345,LSVAU2180N2123456,Camry,2024-01-31,2027-01-31,6,5000
C2,粤B-88888,,Golf,2025-03-01,,12,10000
"""


@pytest.fixture
def runtime(db_url: str) -> Iterator[Runtime]:
    rt = build_runtime(make_settings(db_url))
    with rt.sessions() as s:
        add_customer(s, external_id="C1")
        add_customer(s, external_id="C2")
        s.commit()
    yield rt
    rt.close()


@pytest.fixture
def session(runtime: Runtime) -> Iterator[Session]:
    with runtime.sessions() as s:
        yield s


def center(session: Session) -> Center:
    return session.scalars(select(Center)).one()


def vehicles(session: Session, text: str, **kw: object) -> VehicleImporter:
    return VehicleImporter(session, center(session), TODAY, **kw)  # type: ignore[arg-type]


def test_vehicles_import_and_reimport_updates_by_customer_and_plate(session: Session) -> None:
    report = vehicles(session, VEHICLES).run_text(VEHICLES)
    assert (report.created, report.updated) == (2, 0)
    car = session.scalars(select(Vehicle).where(Vehicle.plate == "沪A12345")).one()  # spaces dropped
    assert (car.vin, car.model, car.interval_km) == ("LSVAU2180N2123456", "Camry", 5000)
    # A new car's first service counts from its purchase: Jan 31 + 6 months = Jul 31.
    assert (car.next_service_due, car.next_service_reason) == (date(2024, 7, 31), "time")
    again = vehicles(session, "").run_text("customer_external_id,plate,model\nC1,沪a12345,Corolla\n")
    assert (again.created, again.updated) == (0, 1)
    session.refresh(car)
    assert (car.model, car.vin) == ("Corolla", "LSVAU2180N2123456")  # columns left out stay as they were
    assert session.scalar(select(func.count()).select_from(Vehicle)) == 2


def test_vehicle_errors_name_row_column_value_and_write_nothing(session: Session) -> None:
    bad = (
        "customer_external_id,plate,vin,model,purchase_date,warranty_end,interval_months,interval_km\n"
        "C1,沪A1,,Camry,2024-02-30,,6,5000\n"
        "NOPE,沪A2,,,,,,\n"
        "C2,沪A3,IOQ,,2027-01-01,,0,many\n"
        "C2,沪A4,,,2025-01-01,2024-01-01,,\n"
        "C2,沪A5,,,,,,\n"
        "C2,沪A 5,,,,,,\n"
    )
    with pytest.raises(ImportDataError) as caught:
        vehicles(session, bad).run_text(bad)
    assert caught.value.problems == [
        "row 2, column purchase_date: value '2024-02-30': not a real date; expected YYYY-MM-DD",
        "row 3, column customer_external_id: value 'NOPE': no such customer in center main; "
        "import the customer first",
        "row 4, column vin: value 'IOQ': not a VIN; expected 17 letters and digits without I, O or Q",
        "row 4, column interval_months: value '0': out of range; expected 1 to 60 months",
        "row 4, column interval_km: value 'many': not a whole number of km",
        "row 5, column warranty_end: value '2024-01-01': before the purchase date 2025-01-01",
        "row 7, column plate: value '沪A5': duplicate of row 6 (same customer_external_id, plate)",
    ]
    assert session.scalar(select(func.count()).select_from(Vehicle)) == 0
    report = vehicles(session, bad, skip_invalid=True).run_text(bad)
    assert (report.created, report.skipped_rows) == (1, [2, 3, 4, 5, 7])
    session.rollback()


def test_unknown_and_missing_columns_are_reported(session: Session) -> None:
    with pytest.raises(ImportDataError, match="row 1, column colour: unknown column"):
        vehicles(session, "").run_text("customer_external_id,plate,colour\nC1,A,red\n")
    with pytest.raises(ImportDataError, match="required column 'plate' is missing"):
        vehicles(session, "").run_text("customer_external_id,model\nC1,Camry\n")


def visits(session: Session, **kw: object) -> VisitImporter:
    return VisitImporter(session, center(session), TODAY, **kw)  # type: ignore[arg-type]


VISITS = """customer_external_id,plate,date,mileage,amount,kind,voucher_code
C1,沪A12345,2026-01-10,12000,680.50,maintenance,
C1,沪A12345,2026-03-10,15000,2000,repair,
"""


def test_visits_import_upserts_by_key_and_keeps_next_service_due_current(session: Session) -> None:
    vehicles(session, VEHICLES).run_text(VEHICLES)
    rules = PointsRules()
    report = visits(session, points=rules).run_text(VISITS)
    assert (report.created, report.updated) == (2, 0)
    car = session.scalars(select(Vehicle).where(Vehicle.plate == "沪A12345")).one()
    # 3000 km in 59 days (50.8 km a day): the last 2000 km to 17,000 take 40 days from March 10,
    # well before the 6-month date of July 10.
    assert (car.next_service_due, car.next_service_reason) == (date(2026, 4, 19), "mileage")
    assert car.next_service_from == date(2026, 1, 10)
    changed = VISITS.replace("2000,repair", "2100,repair")
    again = visits(session, points=rules).run_text(changed)
    assert (again.created, again.updated, again.unchanged) == (0, 1, 1)  # only the repair's amount changed
    assert session.scalar(select(func.count()).select_from(ServiceVisit)) == 2
    assert session.scalar(select(func.sum(PointsEntry.points))) == 68 + 210  # earned once, corrected
    visits(session, points=rules).run_text(
        "customer_external_id,plate,date,mileage,kind\nC1,沪A12345,2026-04-15,16500,maintenance\n"
    )
    session.refresh(car)
    assert car.next_service_from == date(2026, 4, 15) and car.next_service_due > date(2026, 6, 1)


def test_reimporting_unchanged_vehicles_and_visits_counts_them_unchanged(session: Session) -> None:
    assert vehicles(session, VEHICLES).run_text(VEHICLES).created == 2
    again = vehicles(session, VEHICLES).run_text(VEHICLES)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)
    assert visits(session).run_text(VISITS).created == 2
    same = visits(session).run_text(VISITS.replace("12000,680.50", "12000,680.5"))  # the same amount
    assert (same.created, same.updated, same.unchanged) == (0, 0, 2)
    corrected = visits(session).run_text(VISITS.replace("15000,2000", "15100,2000"))
    assert (corrected.created, corrected.updated, corrected.unchanged) == (0, 1, 1)


def test_a_nul_byte_in_a_record_is_a_row_error_and_skip_invalid_imports_the_rest(session: Session) -> None:
    """On PostgreSQL a NUL used to fail the whole import with a traceback."""
    text = VEHICLES.replace(",Golf,", ",Go\x00lf,")
    with pytest.raises(ImportDataError) as caught:
        vehicles(session, text).run_text(text)
    assert caught.value.problems == [
        "row 3, column model: value 'Go\\x00lf': contains the control character U+0000 at position 3; "
        "remove it (it is invisible in most editors)"
    ]
    report = vehicles(session, text, skip_invalid=True).run_text(text)
    session.commit()
    assert (report.created, report.skipped_rows) == (1, [3])
    assert session.scalars(select(Vehicle.model)).all() == ["Camry"]


def test_vehicle_and_visit_files_from_chinese_excel_are_read_as_gb18030(session: Session) -> None:
    report = vehicles(session, "").run_bytes(VEHICLES.replace("Camry", "凯美瑞").encode("gbk"), "cars.csv")
    assert report.read_as == "read cars.csv as GB18030 (detected)"
    assert session.scalar(select(Vehicle.model).where(Vehicle.plate == "沪A12345")) == "凯美瑞"
    report = visits(session).run_bytes(VISITS.encode("gbk"), "visits.csv")
    assert (report.read_as, report.created) == ("read visits.csv as GB18030 (detected)", 2)


def test_visit_errors_name_row_column_value_and_write_nothing(session: Session) -> None:
    vehicles(session, VEHICLES).run_text(VEHICLES)
    bad = (
        "customer_external_id,plate,date,mileage,amount,kind,voucher_code\n"
        "C9,沪A12345,2026-01-10,,,maintenance,\n"
        "C1,沪B00000,2026-01-10,,,maintenance,\n"
        "C1,沪A12345,2026-07-01,,,maintenance,\n"
        "C1,沪A12345,2026-01-10,-5,12.345,wash,\n"
        "C1,沪A12345,2026-02-10,,,repair,\n"
        "C1,沪A12345,2026-02-10,,,repair,\n"
        "C1,沪A12345,2026-02-11,,,maintenance,V-NONE-0000\n"
    )
    with pytest.raises(ImportDataError) as caught:
        visits(session).run_text(bad)
    assert caught.value.problems == [
        "row 2, column customer_external_id: value 'C9': no such customer in center main; "
        "import the customer first",
        "row 3, column plate: value '沪B00000': customer C1 has no vehicle with this plate; "
        "import it with 'careflow import vehicles' first",
        "row 4, column date: value '2026-07-01': is in the future",
        "row 5, column mileage: value '-5': out of range; expected 0 to 3000000 km",
        "row 5, column amount: value '12.345': at most 2 decimals and below 10,000,000,000",
        "row 5, column kind: value 'wash': unknown visit kind; expected one of: "
        "maintenance, repair, inspection, other",
        "row 7, column date: value '2026-02-10': duplicate of row 6 "
        "(same customer_external_id, plate, date, kind)",
        "row 8, column voucher_code: value 'V-NONE-0000': no such voucher",
    ]
    assert session.scalar(select(func.count()).select_from(ServiceVisit)) == 0


def test_a_voucher_recorded_on_a_maintenance_visit_is_used_once(session: Session) -> None:
    vehicles(session, VEHICLES).run_text(VEHICLES)
    rules = PointsRules()
    visits(session, points=rules).run_text(
        "customer_external_id,plate,date,amount,kind\nC1,沪A12345,2026-01-10,10000,repair\n"
    )
    c1 = session.scalars(select(Vehicle).where(Vehicle.plate == "沪A12345")).one().customer_id
    from careflow.storage.models import Customer

    customer = session.get(Customer, c1)
    assert customer is not None
    voucher = redeem(session, customer, kind="repair", blocks=1, today=date(2026, 5, 1), rules=rules)
    head = "customer_external_id,plate,date,kind,voucher_code\n"
    on_repair = f"{head}C1,沪A12345,2026-05-20,repair,{voucher.code}\n"
    with pytest.raises(ImportDataError, match=r"row 2, column voucher_code: .*only at a maintenance visit"):
        visits(session).run_text(on_repair)
    by_c2 = f"{head}C2,粤B88888,2026-05-20,maintenance,{voucher.code}\n"
    with pytest.raises(ImportDataError, match="belongs to another customer"):
        visits(session).run_text(by_c2)
    good = on_repair.replace("repair,", "maintenance,")
    twice = good + f"C1,沪A12345,2026-05-21,maintenance,{voucher.code}\n"
    with pytest.raises(ImportDataError, match=r"row 3, column voucher_code: .*already used on row 2"):
        visits(session).run_text(twice)
    visits(session).run_text(good)
    visits(session).run_text(good)  # re-importing the same visit is not a second use
    session.refresh(voucher)
    assert voucher.used_on == date(2026, 5, 20)
    later = f"{head}C1,沪A12345,2026-05-30,maintenance,{voucher.code}\n"
    with pytest.raises(ImportDataError, match="already used on 2026-05-20"):
        visits(session).run_text(later)
    # Taking the voucher off the visit (a correction) makes it usable again.
    visits(session).run_text(good.replace(voucher.code, ""))
    session.refresh(voucher)
    assert voucher.used_visit_id is None
    assert session.scalar(select(func.count()).select_from(Voucher)) == 1


def test_a_voucher_redeemed_at_a_checkout_is_accepted_at_the_next_visit_of_the_same_file(
    session: Session,
) -> None:
    vehicles(session, VEHICLES).run_text(VEHICLES)
    rules = PointsRules()
    visits(session, points=rules).run_text(
        "customer_external_id,plate,date,amount,kind\nC1,沪A12345,2026-01-10,10000,repair\n"
    )
    from careflow.storage.models import Customer

    customer = session.scalars(select(Customer).where(Customer.external_id == "C1")).one()
    # Redeemed at the checkout of the May 1 service; the visits arrive later, in one file.
    voucher = redeem(session, customer, kind="repair", blocks=1, today=date(2026, 5, 1), rules=rules)
    head = "customer_external_id,plate,date,kind,voucher_code\n"
    both = f"{head}C1,沪A12345,2026-05-01,maintenance,\nC1,沪A12345,2026-05-20,maintenance,{voucher.code}\n"
    report = visits(session).run_text(both)
    assert report.created == 2 and not report.problems
    session.refresh(voucher)
    assert voucher.used_on == date(2026, 5, 20)


def test_a_voucher_tied_to_its_checkout_visit_is_refused_on_that_visit_by_row_and_column(
    session: Session,
) -> None:
    vehicles(session, VEHICLES).run_text(VEHICLES)
    rules = PointsRules()
    head = "customer_external_id,plate,date,amount,kind,voucher_code\n"
    visits(session, points=rules).run_text(f"{head}C1,沪A12345,2026-05-01,10000,maintenance,\n")
    checkout = session.scalars(select(ServiceVisit)).one()
    from careflow.storage.models import Customer

    customer = session.scalars(select(Customer).where(Customer.external_id == "C1")).one()
    voucher = redeem(
        session, customer, kind="repair", blocks=1, today=date(2026, 5, 1), rules=rules, at_visit=checkout
    )
    with pytest.raises(
        ImportDataError,
        match=r"row 2, column voucher_code: .*redeemed at this visit's checkout; "
        "it is valid from the customer's next maintenance visit",
    ):
        visits(session).run_text(f"{head}C1,沪A12345,2026-05-01,10000,maintenance,{voucher.code}\n")
    visits(session).run_text(f"{head}C1,沪A12345,2026-05-25,800,maintenance,{voucher.code}\n")
    session.refresh(voucher)
    assert voucher.used_on == date(2026, 5, 25)


def test_the_cli_imports_records_adds_visits_and_redeems_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAREFLOW_CONFIG", raising=False)
    runner = CliRunner()
    assert runner.invoke(main, ["init"]).exit_code == 0
    with (tmp_path / "careflow.toml").open("a", encoding="utf-8") as fh:
        fh.write("\n[plugins.points]\nenabled = true\nblock_points = 500\n")
    (tmp_path / "c.csv").write_text("external_id,name,phone,sms_consent\nC1,王伟,13800138000,yes\n", "utf-8")
    (tmp_path / "v.csv").write_text(
        "customer_external_id,plate,model,interval_months\nC1,沪A1,Camry,6\n", "utf-8"
    )
    assert runner.invoke(main, ["import", "customers", "c.csv"]).exit_code == 0
    result = runner.invoke(main, ["import", "vehicles", "v.csv"])
    assert result.exit_code == 0 and "created 1" in result.output
    (tmp_path / "bad.csv").write_text(
        "customer_external_id,plate,date,kind\nC1,沪A1,2020-13-01,repair\n", "utf-8"
    )
    result = runner.invoke(main, ["import", "visits", "bad.csv"])
    assert result.exit_code == 1
    assert "row 2, column date: value '2020-13-01': not a real date" in result.output
    result = runner.invoke(
        main,
        ["visits", "add", "--customer", "C1", "--plate", "沪A1", "--date", "2026-01-05", "--amount", "6000"],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["visits", "add", "--customer", "C1", "--plate", "沪B9", "--kind", "repair"])
    assert result.exit_code == 1 and "plate: value '沪B9': customer C1 has no vehicle" in result.output
    result = runner.invoke(main, ["points", "adjust", "C1", "-100", "--reason", "correction"])
    assert result.exit_code == 0 and "balance 500" in result.output, result.output
    result = runner.invoke(main, ["points", "redeem", "C1", "--kind", "accessory"])
    assert result.exit_code == 0 and "voucher V-" in result.output and "balance 0" in result.output
    result = runner.invoke(main, ["points", "redeem", "C1", "--kind", "accessory"])
    assert result.exit_code == 1 and "not enough points: 500 needed, 0 available" in result.output
    result = runner.invoke(main, ["points", "show", "C1"])
    assert result.exit_code == 0 and "accessory" in result.output and "unused" in result.output


def test_points_redeem_takes_the_date_and_the_visit_whose_checkout_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAREFLOW_CONFIG", raising=False)
    runner = CliRunner()
    assert runner.invoke(main, ["init"]).exit_code == 0
    with (tmp_path / "careflow.toml").open("a", encoding="utf-8") as fh:
        fh.write("\n[plugins.points]\nenabled = true\nblock_points = 500\n")
    (tmp_path / "c.csv").write_text("external_id,name,phone,sms_consent\nC1,王伟,13800138000,yes\n", "utf-8")
    (tmp_path / "v.csv").write_text(
        "customer_external_id,plate,model,interval_months\nC1,沪A1,Camry,6\n", "utf-8"
    )
    assert runner.invoke(main, ["import", "customers", "c.csv"]).exit_code == 0
    assert runner.invoke(main, ["import", "vehicles", "v.csv"]).exit_code == 0
    # Dates relative to the real today: the commands refuse the future and vouchers expire.
    checkout, later = (date.today() - timedelta(days=d) for d in (30, 10))
    add = ["visits", "add", "--customer", "C1", "--plate", "沪A1"]
    result = runner.invoke(main, [*add, "--date", checkout.isoformat(), "--amount", "6000"])
    assert result.exit_code == 0, result.output
    redeem_at = ["points", "redeem", "C1", "--kind", "repair", "--visit", "沪A1"]
    result = runner.invoke(main, [*redeem_at, "--date", (checkout - timedelta(days=1)).isoformat()])
    assert result.exit_code == 1
    assert (
        f"--visit '沪A1': C1 has no visit with this plate on {checkout - timedelta(days=1)}" in result.output
    )
    result = runner.invoke(main, [*redeem_at, "--date", (date.today() + timedelta(days=2)).isoformat()])
    assert result.exit_code == 1 and "is in the future" in result.output
    result = runner.invoke(main, [*redeem_at, "--date", checkout.isoformat()])
    assert result.exit_code == 0, result.output
    assert f"at the checkout of maintenance visit {checkout}" in result.output
    code = result.output.split("voucher ", 1)[1].split(":", 1)[0]
    result = runner.invoke(main, ["points", "show", "C1"])
    assert result.exit_code == 0 and "unused" in result.output, result.output
    result = runner.invoke(main, [*add, "--date", checkout.isoformat(), "--voucher", code])
    assert result.exit_code == 1 and "redeemed at this visit's checkout" in result.output
    result = runner.invoke(main, [*add, "--date", later.isoformat(), "--voucher", code])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["points", "show", "C1"])
    assert f"used {later}" in result.output, result.output
