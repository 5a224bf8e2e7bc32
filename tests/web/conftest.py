"""A console over two centers (north, south) with customers, events and one user of each role."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from careflow.config import Settings
from careflow.runtime import Runtime
from careflow.storage.models import CareEvent, Consent, Customer, EventStatus, Role, ServiceVisit, Vehicle
from careflow.testing import add_customer, build_runtime, center, make_settings
from careflow.web.console import console_app
from careflow.web.console.security import add_user

PASSWORD = "correct horse battery"
SECRET = "test-secret-key-not-for-production"


class Clock:
    """A clock the tests move forward (session expiry)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 5, 10, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@dataclass
class World:
    runtime: Runtime
    clock: Clock
    north_customer: int
    south_customer: int
    failed_event: int
    south_event: int


def history_events(center_id: int, customer_id: int) -> list[CareEvent]:
    """Two weeks of made-up outcomes for one center, so the dashboard has something to chart."""
    events = []
    statuses = ["delivered", "delivered", "sent", "delivered", "failed", "suppressed", "delivered", "planned"]
    for day in range(14):
        for i in range((day * 5) % 7 + 2):
            plugin = "maintenance" if (day + i) % 3 == 0 else "birthday"
            status = statuses[(day * 3 + i) % len(statuses)]
            events.append(
                CareEvent(
                    idempotency_key=f"{plugin}:history:{day}-{i}:{customer_id}",
                    center_id=center_id,
                    customer_id=customer_id,
                    plugin=plugin,
                    occasion="history",
                    period=f"{day}-{i}",
                    purpose="service" if plugin == "maintenance" else "marketing",
                    due_date=date(2026, 4, 27) + timedelta(days=day),
                    channel="sms",
                    recipient="+8613800138000",
                    template=plugin,
                    locale="en",
                    context={},
                    status=status,
                    status_reason="unreachable: sms: no marketing consent"
                    if status == "suppressed"
                    else None,
                )
            )
    return events


def world_settings(db_file: Path | str) -> Settings:
    return make_settings(
        db_file if isinstance(db_file, str) else f"sqlite:///{db_file}",
        centers={
            "north": {"name": "North Motors", "timezone": "Asia/Shanghai", "locale": "zh_CN"},
            "south": {"name": "South Auto", "timezone": "Asia/Shanghai", "locale": "en"},
        },
        plugins={"birthday": {"enabled": True}},
        web={
            "secret_key": SECRET,
            "cookie_secure": False,
            "session_idle_minutes": 30,
            "session_max_hours": 8,
        },
    )


def make_world(where: Path | str) -> World:
    """The world in ``where`` (a directory for SQLite, or a database URL)."""
    runtime = build_runtime(world_settings(where / "console.db" if isinstance(where, Path) else where))
    with runtime.sessions.begin() as session:
        north = add_customer(
            session,
            external_id="N-1",
            name="王伟",
            locale="zh_CN",
            center_code="north",
            birthday=(1985, 5, 11),
        )
        other = add_customer(
            session, external_id="N-2", name="Li Na", locale="en", center_code="north", birthday=(1990, 7, 1)
        )
        south = add_customer(
            session,
            external_id="S-1",
            name="Emma Clarke",
            locale="en",
            center_code="south",
            birthday=(1980, 5, 11),
        )
        failed = CareEvent(
            idempotency_key=f"birthday:birthday:2025:{north.id}",
            center_id=north.center_id,
            customer_id=north.id,
            plugin="birthday",
            occasion="birthday",
            period="2025",
            purpose="marketing",
            due_date=date(2026, 5, 10),
            channel="sms",
            recipient=north.phone,
            template="birthday",
            locale="zh_CN",
            context={"age": 41},
            status=EventStatus.FAILED,
            status_reason="provider said: invalid number",
            error_code="21211",
            attempts=5,
        )
        south_event = CareEvent(
            idempotency_key=f"birthday:birthday:2025:{south.id}",
            center_id=south.center_id,
            customer_id=south.id,
            plugin="birthday",
            occasion="birthday",
            period="2025",
            purpose="marketing",
            due_date=date(2026, 5, 10),
            channel="sms",
            recipient=south.phone,
            template="birthday",
            locale="en",
            context={"age": 46},
            status=EventStatus.FAILED,
            status_reason="south failure",
            attempts=5,
        )
        car = Vehicle(
            customer_id=north.id, plate="沪A·12345", model="Camry 2.5", warranty_end=date(2027, 3, 1)
        )
        session.add(car)
        session.flush()
        session.add(
            ServiceVisit(
                customer_id=north.id,
                vehicle_id=car.id,
                date=date(2026, 3, 2),
                mileage=41_200,
                amount=Decimal("1280.00"),
                kind="maintenance",
            )
        )
        session.add_all([failed, south_event])
        session.flush()
        session.add_all(history_events(north.center_id, other.id))
        stop = Consent(
            customer_id=other.id, channel="whatsapp", purpose="marketing", granted=False, source="reply:STOP"
        )
        stop.updated_at = datetime(2026, 5, 6, 3, 0, tzinfo=UTC)
        session.add(stop)
        add_user(session, "admin@example.com", PASSWORD, Role.ADMIN, None)
        add_user(session, "manager@north.example", PASSWORD, Role.CENTER_MANAGER, center(session, "north"))
        add_user(session, "marketer@north.example", PASSWORD, Role.MARKETER, center(session, "north"))
        add_user(session, "marketer@south.example", PASSWORD, Role.MARKETER, center(session, "south"))
        ids = (north.id, south.id, failed.id, south_event.id)
    return World(runtime, Clock(), *ids)


@pytest.fixture(scope="session")
def _seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, World]:
    """Built once (argon2 hashing and migrations take a while); each test gets a copy of the file."""
    directory = tmp_path_factory.mktemp("console-seed")
    seeded = make_world(directory)
    seeded.runtime.close()
    return directory / "console.db", seeded


@pytest.fixture
def world(tmp_path: Path, _seeded: tuple[Path, World]) -> Iterator[World]:
    source, seeded = _seeded
    shutil.copy(source, tmp_path / "console.db")
    runtime = build_runtime(world_settings(tmp_path / "console.db"))
    w = World(
        runtime,
        Clock(),
        seeded.north_customer,
        seeded.south_customer,
        seeded.failed_event,
        seeded.south_event,
    )
    yield w
    w.runtime.close()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    app = console_app(world.runtime, clock=world.clock)
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as c:
        yield c


def csrf_of(html: str) -> str:
    marker = 'name="csrf_token" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> None:
    page = client.get("/login")
    response = client.post(
        "/login", data={"email": email, "password": password, "csrf_token": csrf_of(page.text)}
    )
    assert response.status_code == 303, response.text


def customer_of(world: World, external_id: str) -> Customer:
    with world.runtime.sessions() as session:
        from sqlalchemy import select

        found = session.scalar(select(Customer).where(Customer.external_id == external_id))
        assert found is not None
        return found
