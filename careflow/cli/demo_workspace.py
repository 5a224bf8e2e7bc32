"""``careflow demo``: a workspace with realistic sample customers, and today's care run on it."""

from __future__ import annotations

import csv
import random
import secrets
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from shlex import quote
from zoneinfo import ZoneInfo

from rich.console import Console
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from careflow.cli.demo_records import import_sample_records
from careflow.cli.invocation import careflow_command
from careflow.cli.run_summary import new_keys, run_tables
from careflow.config import Settings, load_settings
from careflow.customers.import_customers import CUSTOMER_COLUMNS, CustomerImporter
from careflow.customers.points import points_rules
from careflow.planning.plan import PlanReport
from careflow.policies.quiet_hours import SendWindow
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import CareEvent, Center, Customer, ServiceVisit, utcnow

DEMO_CONFIG = """\
# careflow demo workspace: SQLite and the in-process broker, messages printed to the console.
[database]
url = "sqlite:///careflow.db"

[broker]
url = "local"

[channels.sms]
provider = "console"

[channels.whatsapp]
provider = "console"

[channels.email]
provider = "console"

[web]
public_url = "http://127.0.0.1:8000"
secret_key = "{secret_key}"  # signs unsubscribe links; made for this workspace only

[centers.main]
name = "安心汽车服务中心"
timezone = "Asia/Shanghai"
locale = "zh_CN"
help_text = "回T退订，客服热线 400-800-1234"
address = "上海市浦东新区世纪大道88号"
frequency_cap = 3                      # care messages per customer per 7 days
email_from = "care@anxin-auto.example.com"

[plugins.birthday]
enabled = true

[plugins.maintenance]
enabled = true
daily_capacity = 8                     # maintenance bookings a day: reminders are paced to fit

[plugins.points]
enabled = true
[plugins.weather]
enabled = true
provider = "file"                        # alerts from the local meteorological bureau
alerts_file = "{alerts_file}"

[plugins.holidays]
enabled = true

[plugins.survey]
enabled = true
staff_phone = "+8613900000000"           # low ratings are passed on to this number

[plugins.winback]
enabled = true
months_by_tier = { A = 6 }
"""

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = [
    "伟",
    "芳",
    "娜",
    "秀英",
    "敏",
    "静",
    "丽",
    "强",
    "磊",
    "军",
    "洋",
    "勇",
    "艳",
    "杰",
    "娟",
    "涛",
    "明",
    "超",
    "秀兰",
    "霞",
]
FIRST = [
    "Emma",
    "Liam",
    "Olivia",
    "Noah",
    "Ava",
    "James",
    "Sophia",
    "Lucas",
    "Mia",
    "Henry",
    "Grace",
    "Daniel",
]
LAST = ["Smith", "Brown", "Wilson", "Taylor", "Clarke", "Walker", "Wright", "Hughes", "Green", "Hall"]
CITIES = [
    ("Shanghai", "Asia/Shanghai"),
    ("Guangzhou", "Asia/Shanghai"),
    ("Shenzhen", "Asia/Shanghai"),
    ("Hangzhou", "Asia/Shanghai"),
    ("Chengdu", "Asia/Shanghai"),
]
EXPAT_CITIES = [
    ("London", "Europe/London"),
    ("Los Angeles", "America/Los_Angeles"),
    ("Sydney", "Australia/Sydney"),
]


def sample_customers(count: int, today: date, seed: int = 20261123) -> list[dict[str, str]]:
    """Deterministic sample cards; a handful have their birthday on ``today``."""
    rng = random.Random(seed)
    rows = []
    for i in range(1, count + 1):
        english = rng.random() < 0.15
        if english:
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            city, tz = rng.choice(EXPAT_CITIES) if rng.random() < 0.5 else rng.choice(CITIES)
            phone = f"+44 7911 12{i % 10000:04d}"
            locale = "en"
        else:
            name = rng.choice(SURNAMES) + rng.choice(GIVEN)
            city, tz = rng.choice(CITIES)
            phone = f"13{rng.randint(5, 9)}{rng.randint(0, 99_999_999):08d}"
            locale = "zh_CN"
        year = rng.randint(1960, 2002)
        bday = date(year, 1, 1) + timedelta(days=rng.randint(0, 364))
        if i % 40 == 0:  # about 2.5% have their birthday today, so the demo has something to show
            bday = _safe_replace(today, year)
        # Every third birthday customer prefers WhatsApp, every third e-mail: all channels show.
        preferred = ("", "whatsapp", "email")[(i // 40) % 3]
        rows.append(
            {
                "external_id": f"C{i:05d}",
                "name": name,
                "phone": "" if i % 97 == 0 else phone,
                "email": f"customer{i}@example.com",
                "birthday": bday.isoformat(),
                "locale": locale,
                "timezone": tz,
                "city": city,
                "sms_consent": "no" if i % 13 == 0 else "yes",
                "email_consent": "yes",
                "whatsapp": phone if preferred == "whatsapp" else "",
                # Some never said yes to WhatsApp: their care falls back to the next channel.
                "whatsapp_consent": "yes" if preferred == "whatsapp" and (i // 40) % 2 else "no",
                "preferred_channel": preferred,
            }
        )
    return rows


def add_sample_visits(session: Session, center_id: int, today: date) -> None:
    """Visits that make the survey (yesterday), win-back (long ago) and segments show; added once."""
    if session.scalar(select(func.count()).select_from(ServiceVisit)):
        return
    ids = list(
        session.scalars(select(Customer.id).where(Customer.center_id == center_id).order_by(Customer.id))
    )
    for n, customer_id in enumerate(ids, start=1):
        if n % 9 == 0:  # a regular: four visits this year, the last one yesterday
            days = [today - timedelta(days=d) for d in (1, 60, 120, 180)]
        elif n % 11 == 0:  # has not been back for ten months
            days = [today - timedelta(days=305)]
        elif n % 3 == 0:  # an ordinary customer, seen this spring
            days = [today - timedelta(days=150)]
        else:
            continue
        for day in days:
            session.add(
                ServiceVisit(customer_id=customer_id, date=day, kind="maintenance", amount=Decimal(1500))
            )


def write_sample_alerts(path: Path, today: date) -> None:
    """A typhoon warning for Shanghai from today, as a bureau would send it."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "city", "kind", "starts", "ends", "headline"])
        writer.writerow(
            [f"SH-TY-{today:%Y%m%d}", "Shanghai", "typhoon", today.isoformat(), "", "台风橙色预警"]
        )


def _safe_replace(day: date, year: int) -> date:
    try:
        return day.replace(year=year)
    except ValueError:  # Feb 29 in a common year
        return day.replace(year=year, day=28)


def demo_instant(now: datetime | None, settings: Settings) -> tuple[datetime, str | None]:
    """The instant the demo runs at: now, or 10:00 today when now is outside sending hours.

    Quiet hours would defer every message of a demo run at night; the demo is meant to show them.
    """
    if now is not None:
        return now, None
    now = utcnow()
    center = settings.centers["main"]
    tz = ZoneInfo(center.timezone)
    window = SendWindow.of(center)
    if window.allows(now.astimezone(tz)):
        return now, None
    pretend = datetime.combine(now.astimezone(tz).date(), time(10, 0), tzinfo=tz)
    note = (
        f"it is {now.astimezone(tz):%H:%M} in {tz.key}, outside sending hours ({window}); "
        f"the demo pretends it is 10:00 (a real run would defer messages to the morning)"
    )
    return pretend, note


def run_demo(directory: Path, *, customers: int, now: datetime | None, out: Console, err: Console) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "careflow.toml"
    alerts = (directory / "weather-alerts.csv").resolve()
    if not config.exists():
        config.write_text(
            DEMO_CONFIG.replace("{secret_key}", secrets.token_urlsafe(32)).replace(
                "{alerts_file}", alerts.as_posix()
            ),
            encoding="utf-8",
        )
    settings = load_settings(config)
    now, note = demo_instant(now, settings)
    runtime = Runtime.build(settings, migrate_schema=True)
    try:
        center_tz = ZoneInfo(settings.centers["main"].timezone)
        today = now.astimezone(center_tz).date()
        csv_path = directory / "customers.csv"
        with csv_path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(CUSTOMER_COLUMNS))
            writer.writeheader()
            writer.writerows(sample_customers(customers, today))
        with runtime.sessions() as session:
            center = session.scalars(select(Center).where(Center.code == "main")).one()
            imported = CustomerImporter(session, center).run(csv_path)
            add_sample_visits(session, center.id, today)
            session.commit()
            records = import_sample_records(session, center, directory, today, points_rules(settings))
            session.commit()
        write_sample_alerts(alerts, today)
        out.print(f"[bold]careflow demo[/] in {directory.resolve()}")
        if note:
            out.print(f"[yellow]note:[/] {note}", highlight=False)
        out.print(
            f"imported {csv_path.name}: {imported.created} new, {imported.updated} updated, "
            f"{imported.unchanged} unchanged customers"
        )
        out.print(
            f"imported vehicles.csv and visits.csv: {records.vehicles} vehicles, {records.visits} visits; "
            f"{records.vouchers} points voucher(s) issued"
        )
        out.print(
            f"running today's care ({today.isoformat()}, {center_tz.key}); messages go to the console:\n"
        )
        result = run_day(runtime, now=now)
        _show(runtime, result.report, out)
        # Commands that work where the user stands: careflow may be .venv/bin/careflow, off PATH.
        again = f"{careflow_command(Path.cwd())} demo"
        if directory != Path("careflow-demo"):
            again += f" --dir {quote(str(directory))}"
        out.print(
            f"\nRun '{again}' again: the same occasions are recognised and nothing is sent twice.\n"
            f"Inspect: cd {quote(str(directory))} && {careflow_command(directory)} events",
            highlight=False,
            markup=False,
        )
    finally:
        runtime.close()


def _show(runtime: Runtime, report: PlanReport, out: Console) -> None:
    """This run's occasions, each message in full; earlier runs' occasions only counted."""
    keys = new_keys(report)
    with runtime.sessions() as session:
        events = session.execute(
            select(CareEvent, Customer)
            .join(Customer, Customer.id == CareEvent.customer_id)
            .where(CareEvent.idempotency_key.in_(keys))
            .order_by(CareEvent.id)
        ).all()
        total = session.scalar(select(func.count()).select_from(CareEvent)) or 0
    out.print()
    for table in run_tables(runtime, report, title=f"today's care ({total} event(s) recorded in all)"):
        out.print(table)
    if not events and report.earlier_keys:
        out.print("nothing new this run: every occasion due today was recorded by an earlier run")
    for event, customer in events:
        who = f"{customer.name} ({customer.external_id})"
        if event.status == "sent":
            via = f"{event.channel} ({event.channel_reason})"
            text = (
                f"subject {event.subject!r} (text + HTML parts)" if event.channel == "email" else event.body
            )
            line = f"[green]sent[/]  {event.plugin} → {who} {event.recipient} via {via}: {text}"
        else:
            line = f"[yellow]{event.status}[/]  {event.plugin} → {who}: {event.status_reason}"
        out.print(line, highlight=False)
