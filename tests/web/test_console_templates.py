"""The template editor tells the truth: what it publishes is sent, what it refuses is refused at send
time, its preview never errors out, and its dates are the occasion's (issue 13, items 10, 11, 13, 18).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import func, insert, select
from starlette.testclient import TestClient

from careflow.delivery.batch import deliver
from careflow.storage.models import CareEvent, EventStatus, TemplateVersion
from tests.web.conftest import World, csrf_of, sign_in

EDITOR = "/templates/edit?template=birthday&channel=sms&locale=en"


def _post(client: TestClient, path: str, source: str, **extra: str) -> tuple[int, str]:
    token = csrf_of(client.get(EDITOR).text)
    data = {
        "csrf_token": token,
        "template": "birthday",
        "channel": "sms",
        "locale": "en",
        "scope": "north",
        "source": source,
        **extra,
    }
    response = client.post(path, data=data)
    return response.status_code, response.text


def _published(world: World) -> int:
    with world.runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(TemplateVersion)) or 0


# --- item 11: one linter, so the console and delivery agree -----------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "Hi {{ '{}'.format(customer.name) }}",  # the sandbox allows str.format; send-time lint does not
        "Hi {{ customer.name }}{% if false %}{{ customer._secret }}{% endif %}",  # an untaken branch
    ],
)
def test_the_console_refuses_to_publish_what_every_send_would_refuse(
    client: TestClient, world: World, source: str
) -> None:
    sign_in(client, "marketer@north.example")
    status, page = _post(client, "/templates/save", source)
    assert status == 422
    assert 'data-kind="unsafe"' in page and "Cannot publish" in page
    assert _published(world) == 0


def test_the_console_publishes_what_sends_accept(client: TestClient, world: World) -> None:
    # ``segment`` is a core variable of sends (careflow.customers.segments); the console's own list lacked it.
    sign_in(client, "marketer@north.example")
    status, _ = _post(client, "/templates/save", "Hi {{ customer.name }}, tier {{ segment.tier }}")
    assert status == 303
    assert _published(world) == 1


# --- item 10: another center's template is out of reach --------------------------------------


def test_publishing_an_include_of_another_centers_template_is_refused(
    client: TestClient, world: World
) -> None:
    _insert_version(world, "south", "South's secret offer")
    sign_in(client, "marketer@north.example")
    status, page = _post(client, "/templates/save", "Hi {% include 'centers/south/birthday/sms.en.j2' %}")
    assert status == 422
    assert 'data-kind="other-center"' in page and "belongs to center south" in page
    assert "secret offer" not in page
    assert _published(world) == 1  # only south's own version


def test_a_published_include_of_another_centers_version_is_never_sent(world: World) -> None:
    """Versions written before the fence (or by another process) cannot leak either."""
    _insert_version(world, "south", "South's secret offer", locale="zh_CN")
    _insert_version(world, "north", "Hi {% include 'centers/south/birthday/sms.zh_CN.j2' %}", locale="zh_CN")
    event_id = _birthday_event(world)
    deliver(world.runtime, event_id)
    with world.runtime.sessions() as session:
        event = session.get(CareEvent, event_id)
        assert event is not None
        assert event.status == EventStatus.FAILED
        assert "centers/north/birthday/sms.zh_CN.j2" in (event.status_reason or "")
        assert "other-center" in (event.status_reason or "")
        assert event.body is None


def _insert_version(world: World, scope: str, body: str, locale: str = "en") -> None:
    with world.runtime.engine.begin() as conn:
        conn.execute(
            insert(TemplateVersion.__table__).values(
                scope=scope,
                template="birthday",
                channel="sms",
                locale=locale,
                version=1,
                body=body,
                author="old@example.com",
                created_at=datetime(2026, 5, 1, tzinfo=UTC),
            )
        )


def _birthday_event(world: World) -> int:
    with world.runtime.sessions.begin() as session:
        event = session.get(CareEvent, world.failed_event)
        assert event is not None
        event.status, event.attempts, event.status_reason, event.error_code = (
            EventStatus.PLANNED,
            0,
            None,
            None,
        )
        return event.id


# --- item 13: a render budget; the console answers, never a 500 ------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}",
        "{% for a in customer.name * 300 %}{% for b in customer.name * 300 %}{% endfor %}{% endfor %}Hi",
    ],
)
def test_a_runaway_template_gets_a_finding_not_a_server_error(
    client: TestClient, world: World, source: str
) -> None:
    sign_in(client, "marketer@north.example")
    status, page = _post(client, "/templates/preview", source)
    assert status == 200
    assert 'data-kind="budget"' in page and "render budget exceeded" in page
    status, _ = _post(client, "/templates/save", source)
    assert status == 422
    assert _published(world) == 0


# --- item 18: the preview's dates are the occasion's, not the server's clock ------------------


def test_the_sample_preview_is_due_on_the_centers_today(client: TestClient, world: World) -> None:
    world.clock.now = datetime(2026, 5, 10, 20, 0, tzinfo=UTC)  # already 11 May in Shanghai
    sign_in(client, "marketer@north.example")
    status, page = _post(client, "/templates/preview", "Due {{ due_date }}")
    assert status == 200
    assert "Due 2026-05-11" in page


def test_a_real_customers_preview_is_due_when_their_occasion_is(client: TestClient, world: World) -> None:
    world.clock.now = datetime(2026, 5, 10, 20, 0, tzinfo=UTC)  # 11 May in Shanghai
    sign_in(client, "marketer@north.example")
    customer = str(world.north_customer)
    # Only a past event (due 10 May, age 41): the preview shows that occasion.
    _, page = _post(client, "/templates/preview", "Due {{ due_date }}, {{ age }}", customer_id=customer)
    assert "Due 2026-05-10, 41" in page
    # An occasion due tomorrow is recorded: the preview shows it, not today's date.
    with world.runtime.sessions.begin() as session:
        past = session.get(CareEvent, world.failed_event)
        assert past is not None
        session.add(
            CareEvent(
                idempotency_key=f"birthday:birthday:2026:{world.north_customer}",
                center_id=past.center_id,
                customer_id=world.north_customer,
                plugin="birthday",
                occasion="birthday",
                period="2026",
                purpose="marketing",
                due_date=date(2026, 5, 12),
                channel="sms",
                recipient=past.recipient,
                template="birthday",
                locale="zh_CN",
                context={"age": 42},
                status=EventStatus.DEFERRED,
            )
        )
    _, page = _post(client, "/templates/preview", "Due {{ due_date }}, {{ age }}", customer_id=customer)
    assert "Due 2026-05-12, 42" in page
