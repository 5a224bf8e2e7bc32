"""HTTP-level console tests: sign-in, CSRF, session expiry, every role's permissions, center isolation."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from careflow.errors import ConfigError
from careflow.storage.models import CareEvent, Consent, ConsoleSession, EventStatus
from careflow.web.console import console_app
from tests.web.conftest import PASSWORD, World, csrf_of, sign_in


def test_pages_need_sign_in(client: TestClient) -> None:
    response = client.get("/customers?q=x")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/customers%3Fq%3Dx"


def test_wrong_password_is_refused_without_saying_which_part_was_wrong(client: TestClient) -> None:
    page = client.get("/login")
    response = client.post(
        "/login",
        data={"email": "admin@example.com", "password": "wrong password!", "csrf_token": csrf_of(page.text)},
    )
    assert response.status_code == 401
    assert "Wrong e-mail or password." in response.text
    assert client.get("/").status_code == 303


def test_sign_in_returns_to_the_page_asked_for(client: TestClient) -> None:
    page = client.get("/login?next=/events")
    response = client.post(
        "/login",
        data={
            "email": "admin@example.com",
            "password": PASSWORD,
            "csrf_token": csrf_of(page.text),
            "next": "/events",
        },
    )
    assert response.headers["location"] == "/events"
    again = client.get("/login")
    offsite = client.post(
        "/login",
        data={
            "email": "admin@example.com",
            "password": PASSWORD,
            "csrf_token": csrf_of(again.text),
            "next": "//evil.example/",
        },
    )
    assert offsite.headers["location"] == "/"


def test_session_cookie_is_signed_httponly_samesite_and_secure_when_configured(world: World) -> None:
    world.runtime.settings.web.cookie_secure = True
    with TestClient(
        console_app(world.runtime, clock=world.clock), base_url="https://testserver", follow_redirects=False
    ) as c:
        page = c.get("/login")
        response = c.post(
            "/login",
            data={"email": "admin@example.com", "password": PASSWORD, "csrf_token": csrf_of(page.text)},
        )
        cookie = response.headers["set-cookie"].lower()
    assert "careflow_session=" in cookie
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" in cookie


def test_a_tampered_session_cookie_is_not_accepted(client: TestClient) -> None:
    sign_in(client, "admin@example.com")
    value = client.cookies["careflow_session"]
    token, mac = value.rsplit(".", 1)
    client.cookies.delete("careflow_session")  # replaced, not sent beside the genuine one
    client.cookies.set("careflow_session", f"{token}x.{mac}")
    assert client.get("/").status_code == 303


def test_login_form_needs_its_csrf_token(client: TestClient) -> None:
    client.get("/login")
    response = client.post(
        "/login", data={"email": "admin@example.com", "password": PASSWORD, "csrf_token": "guess"}
    )
    assert response.status_code == 403
    assert "CSRF" in response.text


@pytest.mark.parametrize("token", [None, "not-the-token"])
def test_every_post_needs_the_sessions_csrf_token(
    client: TestClient, world: World, token: str | None
) -> None:
    sign_in(client, "manager@north.example")
    data = {"event_id": str(world.failed_event)}
    if token:
        data["csrf_token"] = token
    response = client.post("/events/retry", data=data)
    assert response.status_code == 403
    with world.runtime.sessions() as session:
        assert session.get(CareEvent, world.failed_event).status == EventStatus.FAILED  # type: ignore[union-attr]


def test_csrf_token_in_a_header_works_for_htmx(client: TestClient) -> None:
    sign_in(client, "marketer@north.example")
    page = client.get("/templates/edit?template=birthday&channel=sms&locale=en")
    response = client.post(
        "/templates/preview",
        data={
            "template": "birthday",
            "channel": "sms",
            "locale": "en",
            "scope": "north",
            "source": "Hi {{ customer.name }}",
        },
        headers={"X-CSRF-Token": csrf_of(page.text)},
    )
    assert response.status_code == 200
    assert "Hi 王小明" in response.text


def test_session_expires_after_the_idle_time_on_the_server(client: TestClient, world: World) -> None:
    sign_in(client, "admin@example.com")
    world.clock.advance(minutes=29)
    assert client.get("/").status_code == 200  # activity slides the idle expiry
    world.clock.advance(minutes=29)
    assert client.get("/").status_code == 200
    world.clock.advance(minutes=31)
    assert client.get("/").status_code == 303
    with world.runtime.sessions() as session:
        assert session.scalar(select(func.count(ConsoleSession.id))) == 0


def test_session_ends_after_the_absolute_lifetime_however_active(client: TestClient, world: World) -> None:
    sign_in(client, "admin@example.com")
    for _ in range(16):  # 8 hours in 30-minute steps, well inside the idle limit each time
        world.clock.advance(minutes=29)
        if client.get("/").status_code != 200:
            break
    world.clock.advance(minutes=29)
    assert client.get("/").status_code == 303


def test_sign_out_ends_the_session(client: TestClient) -> None:
    sign_in(client, "admin@example.com")
    page = client.get("/")
    assert client.post("/logout", data={"csrf_token": csrf_of(page.text)}).status_code == 303
    assert client.get("/").status_code == 303


def test_console_refuses_to_start_without_a_secret_key_except_in_dev_mode(world: World) -> None:
    world.runtime.settings.web.secret_key = None
    with pytest.raises(ConfigError, match="CAREFLOW_WEB__SECRET_KEY"):
        console_app(world.runtime)
    assert console_app(world.runtime, dev=True) is not None


# (role user, method, path, expected status); {n}/{s} are a north/south customer id.
MATRIX = [
    ("admin@example.com", "GET", "/", 200),
    ("admin@example.com", "GET", "/templates", 200),
    ("admin@example.com", "GET", "/plugins", 200),
    ("admin@example.com", "GET", "/customers/import", 200),
    ("admin@example.com", "GET", "/customers/{s}?center=south", 200),
    ("manager@north.example", "GET", "/", 200),
    ("manager@north.example", "GET", "/plugins", 200),
    ("manager@north.example", "GET", "/customers", 200),
    ("manager@north.example", "GET", "/customers/{n}", 200),
    ("manager@north.example", "GET", "/customers/import", 200),
    ("manager@north.example", "GET", "/events", 200),
    ("manager@north.example", "GET", "/dry-run", 200),
    ("manager@north.example", "GET", "/templates", 403),
    ("manager@north.example", "GET", "/templates/edit?template=birthday&channel=sms&locale=en", 403),
    ("manager@north.example", "GET", "/customers/{s}", 403),
    ("manager@north.example", "GET", "/?center=south", 403),
    ("manager@north.example", "GET", "/plugins?center=south", 403),
    ("marketer@north.example", "GET", "/", 200),
    ("marketer@north.example", "GET", "/templates", 200),
    ("marketer@north.example", "GET", "/templates/edit?template=birthday&channel=sms&locale=en", 200),
    ("marketer@north.example", "GET", "/customers/{n}", 200),
    ("marketer@north.example", "GET", "/events", 200),
    ("marketer@north.example", "GET", "/dry-run", 200),
    ("marketer@north.example", "GET", "/plugins", 403),
    ("marketer@north.example", "GET", "/plugins/birthday", 403),
    ("marketer@north.example", "GET", "/customers/import", 403),
    ("marketer@north.example", "GET", "/customers/{s}", 403),
    ("marketer@north.example", "GET", "/customers/{s}?center=south", 403),
    ("marketer@north.example", "GET", "/events?center=south", 403),
    ("marketer@north.example", "GET", "/templates/edit?template=birthday&channel=sms&locale=en&scope=", 403),
    (
        "marketer@north.example",
        "GET",
        "/templates/edit?template=birthday&channel=sms&locale=en&scope=south",
        403,
    ),
    ("marketer@south.example", "GET", "/customers/{n}", 403),
    ("marketer@south.example", "GET", "/customers/{s}", 200),
]


@pytest.mark.parametrize(("email", "method", "path", "expected"), MATRIX)
def test_role_permissions_and_center_isolation(
    client: TestClient, world: World, email: str, method: str, path: str, expected: int
) -> None:
    sign_in(client, email)
    url = path.format(n=world.north_customer, s=world.south_customer)
    response = client.request(method, url)
    assert response.status_code == expected, response.text[:300]


def test_other_centers_records_never_appear_in_lists(client: TestClient, world: World) -> None:
    sign_in(client, "marketer@north.example")
    customers = client.get("/customers").text
    assert "王伟" in customers and "Emma Clarke" not in customers
    events = client.get("/events").text
    assert "invalid number" in events and "south failure" not in events


@pytest.mark.parametrize(
    ("email", "expected"), [("marketer@north.example", 403), ("manager@north.example", 303)]
)
def test_retry_needs_the_permission_and_never_touches_another_centers_event(
    client: TestClient, world: World, email: str, expected: int
) -> None:
    sign_in(client, email)
    page = client.get("/events")
    response = client.post(
        "/events/retry",
        data={
            "csrf_token": csrf_of(page.text),
            "event_id": [str(world.failed_event), str(world.south_event)],
        },
    )
    assert response.status_code == expected
    with world.runtime.sessions() as session:
        north = session.get(CareEvent, world.failed_event)
        south = session.get(CareEvent, world.south_event)
        assert north is not None and south is not None
        assert north.status == (EventStatus.PLANNED if expected == 303 else EventStatus.FAILED)
        assert south.status == EventStatus.FAILED
    if expected == 303:
        assert (
            "1 events marked planned; the next care run sends them."
            in client.get(response.headers["location"]).text
        )


def test_chinese_interface(client: TestClient) -> None:
    sign_in(client, "marketer@north.example")
    client.get("/lang/zh?next=/")
    page = client.get("/")
    assert '<html lang="zh-CN">' in page.text
    assert "仪表盘" in page.text and "消息模板" in page.text


def test_form_tampering_cannot_reach_another_scope_or_centers_customer(
    client: TestClient, world: World
) -> None:
    sign_in(client, "marketer@north.example")
    token = csrf_of(client.get("/templates/edit?template=birthday&channel=sms&locale=en").text)
    base = {"csrf_token": token, "template": "birthday", "channel": "sms", "locale": "en", "source": "Hi"}
    assert client.post("/templates/save", data={**base, "scope": ""}).status_code == 403
    assert client.post("/templates/save", data={**base, "scope": "south"}).status_code == 403
    preview = client.post(
        "/templates/preview", data={**base, "scope": "north", "customer_id": str(world.south_customer)}
    )
    assert preview.status_code == 403
    assert "Emma" not in preview.text


def _attempt(client: TestClient, email: str, password: str) -> int:
    page = client.get("/login")
    answer = client.post(
        "/login", data={"email": email, "password": password, "csrf_token": csrf_of(page.text)}
    )
    return answer.status_code


def test_repeated_failed_sign_ins_lock_the_account_out_for_a_while(client: TestClient, world: World) -> None:
    """Five wrong passwords for one e-mail: for 15 minutes even the right one is refused, without
    being checked; then it works, and a success forgets the failures."""
    assert [_attempt(client, "admin@example.com", "guess") for _ in range(5)] == [401] * 5
    page = client.get("/login")
    locked = client.post(
        "/login", data={"email": "Admin@Example.com", "password": PASSWORD, "csrf_token": csrf_of(page.text)}
    )
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    assert "Too many failed sign-ins" in locked.text
    assert client.get("/").status_code == 303  # not signed in
    assert _attempt(client, "manager@north.example", PASSWORD) == 303  # another account is unaffected
    world.clock.advance(minutes=16)
    assert _attempt(client, "admin@example.com", PASSWORD) == 303
    assert _attempt(client, "admin@example.com", "guess") == 401  # the count started again


def test_many_accounts_tried_from_one_address_lock_that_address_out(client: TestClient) -> None:
    assert {_attempt(client, f"nobody{i}@example.com", "guess") for i in range(20)} == {401}
    assert _attempt(client, "admin@example.com", PASSWORD) == 429


def test_the_csv_upload_reads_a_chinese_excel_file_with_the_same_reader_as_the_cli(
    client: TestClient, world: World
) -> None:
    sign_in(client, "manager@north.example")
    token = csrf_of(client.get("/customers/import").text)
    gbk = "external_id,name,city,phone\nN-9,欧阳娜娜,深圳市,13800138009\n".encode("gbk")

    page = client.post(
        "/customers/import",
        data={"csrf_token": token, "center": "north"},
        files={"file": ("客户.csv", gbk, "text/csv")},
    )

    assert page.status_code == 200, page.text
    assert "read 客户.csv as GB18030 (detected)" in page.text
    assert "欧阳娜娜" in client.get("/customers?q=N-9").text
    again = client.post(
        "/customers/import",
        data={"csrf_token": token, "center": "north"},
        files={"file": ("客户.csv", gbk, "text/csv")},
    )
    assert "Unchanged: 1" in again.text


def test_the_customer_card_says_whether_each_voucher_can_still_be_used(
    client: TestClient, world: World
) -> None:
    from datetime import date

    from careflow.customers.points import PointsRules, adjust, redeem
    from careflow.storage.models import Customer, ServiceVisit

    rules = PointsRules()
    with world.runtime.sessions.begin() as session:
        customer = session.get(Customer, world.north_customer)
        assert customer is not None
        checkout = session.scalars(select(ServiceVisit).where(ServiceVisit.customer_id == customer.id)).one()
        assert checkout.date == date(2026, 3, 2)  # the seeded maintenance visit
        adjust(session, customer, 2000, reason="welcome", today=date(2026, 2, 1), rules=rules)
        before = redeem(session, customer, kind="repair", blocks=1, today=date(2026, 2, 20), rules=rules)
        at_checkout = redeem(
            session, customer, kind="accessory", blocks=1, today=checkout.date, rules=rules, at_visit=checkout
        )
        codes = (before.code, at_checkout.code)
    sign_in(client, "manager@north.example")
    page = client.get(f"/customers/{world.north_customer}")
    assert page.status_code == 200
    vouchers = page.text.split("<h2>vouchers</h2>", 1)[1]
    rows = {code: vouchers.split(code, 1)[1].split("</tr>", 1)[0] for code in codes}
    # The same words as `careflow points show`: the checkout visit is not the voucher's next visit.
    assert "<td>unused</td>" in rows[at_checkout.code]
    assert "<td>lapsed: not used at the maintenance visit on 2026-03-02</td>" in rows[before.code]


def test_retry_in_quiet_hours_defers_to_the_window_instead_of_sending(
    client: TestClient, world: World
) -> None:
    world.runtime.settings.centers["north"].send_from = "09:00"
    world.runtime.settings.centers["north"].send_until = "20:00"
    world.clock.now = world.clock.now.replace(hour=14)  # 22:00 in Shanghai: after send_until
    sign_in(client, "manager@north.example")
    page = client.get("/events")
    response = client.post(
        "/events/retry", data={"csrf_token": csrf_of(page.text), "event_id": str(world.failed_event)}
    )
    assert response.status_code == 303
    assert "1 deferred to the sending window (quiet hours)." in client.get(response.headers["location"]).text
    with world.runtime.sessions() as session:
        event = session.get(CareEvent, world.failed_event)
        assert event is not None and event.status == EventStatus.DEFERRED
        assert event.not_before is not None and event.not_before.hour == 1  # 09:00 in Shanghai
        assert "retried by an operator; quiet hours (09:00-20:00 Asia/Shanghai)" in (
            event.status_reason or ""
        )


def _card(client: TestClient, world: World) -> str:
    response = client.get(f"/customers/{world.north_customer}")
    assert response.status_code == 200
    return response.text


def test_the_card_shows_the_consent_history_and_records_an_evidenced_reconsent(
    client: TestClient, world: World
) -> None:
    sign_in(client, "manager@north.example")
    url = f"/customers/{world.north_customer}/consent"
    stop = {"action": "withdraw", "channel": "sms", "purpose": "marketing", "evidence": "phoned the desk"}
    response = client.post(url, data={**stop, "csrf_token": csrf_of(_card(client, world))})
    assert response.status_code == 303
    card = _card(client, world)
    assert "customer-request" in card and "phoned the desk" in card and "manager@north.example" in card

    reconsent = {"action": "grant", "channel": "sms", "purpose": "marketing", "date": "2026-05-10"}
    refused = client.post(url, data={**reconsent, "csrf_token": csrf_of(card)})
    assert refused.status_code == 422
    assert "a re-consent needs its evidence" in refused.text
    given = {**reconsent, "time": "17:30", "evidence": "signed form, ref 77"}
    assert client.post(url, data={**given, "csrf_token": csrf_of(card)}).status_code == 303
    card = _card(client, world)
    assert "re-consent" in card and "signed form, ref 77" in card
    with world.runtime.sessions() as session:
        granted = session.scalar(
            select(Consent.granted).where(
                Consent.customer_id == world.north_customer,
                Consent.channel == "sms",
                Consent.purpose == "marketing",
            )
        )
    assert granted is True


def test_a_marketer_cannot_record_consent_and_another_center_is_out_of_reach(
    client: TestClient, world: World
) -> None:
    sign_in(client, "marketer@north.example")
    card = _card(client, world)
    assert 'id="record-consent"' not in card
    response = client.post(
        f"/customers/{world.north_customer}/consent",
        data={"action": "withdraw", "channel": "sms", "purpose": "all", "csrf_token": csrf_of(card)},
    )
    assert response.status_code == 403
    client.post("/logout", data={"csrf_token": csrf_of(card)})
    sign_in(client, "manager@north.example")
    page = _card(client, world)
    response = client.post(
        f"/customers/{world.south_customer}/consent",
        data={"action": "withdraw", "channel": "sms", "purpose": "all", "csrf_token": csrf_of(page)},
    )
    assert response.status_code == 403
