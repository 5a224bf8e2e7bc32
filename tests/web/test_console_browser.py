"""The console in real headless Chromium (Debian's package, driven by Playwright) against uvicorn."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright

from careflow.planning.center_settings import plugin_passes
from careflow.web.console import console_app
from tests.web.conftest import PASSWORD, World

CHROMIUM = os.environ.get("CAREFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Set CAREFLOW_SCREENSHOTS=docs/images to refresh the documentation's screenshots.
SCREENSHOTS = os.environ.get("CAREFLOW_SCREENSHOTS")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run .ci/browser (apt-get install chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def server(world: World) -> Iterator[str]:
    port = _free_port()
    config = uvicorn.Config(
        console_app(world.runtime, clock=world.clock), host="127.0.0.1", port=port, log_level="warning"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    p = context.new_page()
    p.set_default_timeout(15_000)
    yield p
    context.close()


def sign_in(page: Page, base: str, email: str) -> None:
    page.goto(base + "/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Dashboard")


def shot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=True)


def test_sign_in_and_out(page: Page, server: str) -> None:
    page.goto(server + "/events")
    expect(page).to_have_url(server + "/login?next=/events")
    page.get_by_label("E-mail").fill("manager@north.example")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong e-mail or password.")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(server + "/events")
    expect(page.locator("#event-table")).to_contain_text("invalid number")
    shot(page, "console-events.png")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_edit_a_template_and_see_the_preview_change_then_publish(
    page: Page, server: str, world: World
) -> None:
    sign_in(page, server, "marketer@north.example")
    page.get_by_role("link", name="Templates").click()
    page.get_by_role("row", name="birthday sms en").get_by_role("link", name="Edit").click()
    preview = page.locator("#preview-body")
    expect(preview).to_contain_text("Happy birthday")
    page.get_by_label("Preview for").select_option(label="王伟 (N-1)")
    expect(page.locator("#preview-h")).to_contain_text("王伟 (N-1)")
    page.get_by_label("Template", exact=True).fill(
        "Dear {{ customer.name }}, all of {{ center.name }} wish you a happy {{ age }}th birthday!"
    )
    expect(preview).to_have_text(
        "Dear 王伟, all of North Motors wish you a happy 41th birthday! Reply STOP to opt out"
    )
    expect(page.locator("#segments")).to_contain_text("UCS-2")
    expect(page.locator("#footer")).to_contain_text("Reply STOP to opt out")
    expect(page.locator("#lint")).to_contain_text("No problems found.")
    page.get_by_label("Template", exact=True).fill(
        "Hello {{ customer.name }}, happy birthday from {{ center.name }}!"
    )
    expect(preview).to_have_text("Hello 王伟, happy birthday from North Motors! Reply STOP to opt out")
    shot(page, "console-template-editor.png")
    page.get_by_role("button", name="Publish").click()
    expect(page.get_by_role("status")).to_contain_text("Published version v1")
    expect(page.locator("#history")).to_contain_text("marketer@north.example")


def test_a_broken_template_is_blocked_with_the_error_shown(page: Page, server: str) -> None:
    sign_in(page, server, "marketer@north.example")
    page.goto(server + "/templates/edit?template=birthday&channel=sms&locale=en")
    editor = page.get_by_label("Template", exact=True)
    editor.fill("Hi {{ customer.name.__class__.__mro__ }}")
    expect(page.locator("#lint li[data-kind=unsafe]").first).to_be_visible()  # __class__ and __mro__
    editor.fill("Hi {{ customer.nme }} {{ voucher_code }}")
    expect(page.locator("#lint li[data-kind=undefined-variable]")).to_contain_text("voucher_code")
    editor.fill("Hi {% if %}")
    expect(page.locator("#lint li[data-kind=syntax]")).to_be_visible()
    expect(page.locator("#blocked")).to_be_visible()
    page.get_by_role("button", name="Publish").click()
    expect(page.get_by_role("status")).to_contain_text("Cannot publish: fix the errors first.")
    expect(page.locator("#history")).not_to_contain_text("v1")


def test_rollback_restores_an_earlier_version_as_a_new_one(page: Page, server: str, world: World) -> None:
    sign_in(page, server, "marketer@north.example")
    page.goto(server + "/templates/edit?template=birthday&channel=sms&locale=en")
    editor = page.get_by_label("Template", exact=True)
    for text in ("First text for {{ customer.name }}", "Second text for {{ customer.name }}"):
        editor.fill(text)
        expect(page.locator("#preview-body")).to_contain_text(text.split(" for")[0])
        page.get_by_role("button", name="Publish").click()
        expect(page.get_by_role("status")).to_contain_text("Published version")
    page.get_by_role("button", name="Roll back to this version (v1)").click()
    expect(page.get_by_role("status")).to_contain_text("Rolled back. v1 → v3")
    expect(page.get_by_label("Template", exact=True)).to_have_value("First text for {{ customer.name }}")
    expect(page.locator("#history tbody tr").first).to_contain_text("rollback to v1")


def test_toggle_a_plugin_for_one_center_changes_what_is_planned(
    page: Page, server: str, world: World
) -> None:
    sign_in(page, server, "manager@north.example")
    page.get_by_role("link", name="Plugins").click()
    row = page.locator("#plugin-birthday")
    expect(row.locator(".state")).to_have_text("Enabled")
    row.get_by_role("button", name="Disable birthday").click()
    expect(page.locator("#plugin-birthday .state")).to_have_text("Disabled")
    with world.runtime.sessions() as session:
        runs = plugin_passes(world.runtime.registry, world.runtime.settings, session)
    north_id = next(c for c in world_center_ids(world) if c[1] == "north")[0]
    assert [r.plugin.name for r in runs] == ["birthday"]
    assert north_id not in (runs[0].center_ids or set())
    page.locator("#plugin-birthday").get_by_role("button", name="Enable birthday").click()
    expect(page.locator("#plugin-birthday .state")).to_have_text("Enabled")


def world_center_ids(world: World) -> list[tuple[int, str]]:
    from sqlalchemy import select

    from careflow.storage.models import Center

    with world.runtime.sessions() as session:
        return [(c.id, c.code) for c in session.scalars(select(Center))]


def test_upload_a_csv_with_errors_shows_each_row(page: Page, server: str, tmp_path: Path) -> None:
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text(
        "external_id,name,phone,birthday,sms_consent\n"
        "N-10,赵敏,13800138001,1988-02-30,yes\n"
        "N-11,Zhou Jie,not-a-phone,1990-01-01,maybe\n"
        "N-12,Good Row,13800138002,1991-03-04,yes\n",
        encoding="utf-8",
    )
    sign_in(page, server, "manager@north.example")
    page.goto(server + "/customers/import")
    page.get_by_label("CSV file").set_input_files(str(csv_file))
    page.get_by_role("button", name="Import").click()
    result = page.locator("#import-result")
    expect(result).to_contain_text("Nothing was imported.")
    expect(result).to_contain_text("row 2, column birthday: value '1988-02-30'")
    expect(result).to_contain_text("row 3, column phone: value 'not-a-phone'")
    expect(result).to_contain_text("row 3, column sms_consent: value 'maybe'")
    page.get_by_label("CSV file").set_input_files(str(csv_file))
    page.get_by_label("Import valid rows, skip invalid ones").check()
    page.get_by_role("button", name="Import").click()
    expect(page.locator("#import-result")).to_contain_text("Created: 1")
    page.goto(server + "/customers?q=Good")
    expect(page.get_by_role("link", name="Good Row")).to_be_visible()


def test_a_marketer_cannot_open_another_centers_customer(page: Page, server: str, world: World) -> None:
    sign_in(page, server, "marketer@north.example")
    page.goto(server + "/customers")
    expect(page.get_by_role("link", name="王伟")).to_be_visible()
    expect(page.get_by_text("Emma Clarke")).to_have_count(0)
    for guess in (
        f"/customers/{world.south_customer}",
        f"/customers/{world.south_customer}?center=south",
        "/customers?center=south",
    ):
        response = page.goto(server + guess)
        assert response is not None and response.status == 403
        expect(page.get_by_role("heading", level=1)).to_have_text("Forbidden")
    response = page.goto(server + f"/customers/{world.north_customer}")
    assert response is not None and response.status == 200


def test_customer_card_dashboard_and_dry_run(page: Page, server: str, world: World) -> None:
    sign_in(page, server, "manager@north.example")
    page.goto(server + f"/customers/{world.north_customer}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("王伟")
    expect(page.locator("#events")).to_contain_text("provider said: invalid number")
    shot(page, "console-customer-card.png")
    page.get_by_role("link", name="Dashboard").click()
    expect(page.locator("svg.chart").first).to_be_visible()
    shot(page, "console-dashboard.png")
    page.get_by_role("link", name="Dry run").click()
    # Tomorrow (2026-05-11) is 王伟's birthday in north; south's Emma is not shown here.
    expect(page.locator("#dry-run")).to_contain_text("王伟")
    expect(page.locator("#dry-run")).not_to_contain_text("Emma")


def test_record_a_customers_reconsent_on_the_card_and_see_it_in_the_history(
    page: Page, server: str, world: World
) -> None:
    sign_in(page, server, "manager@north.example")
    page.goto(server + f"/customers/{world.north_customer}")
    form = page.locator("#record-consent")
    form.get_by_label("The customer", exact=True).select_option("withdraw")
    form.get_by_label("Channel").select_option("sms")
    form.get_by_label("Purpose").select_option("marketing")
    form.get_by_label("Evidence (how and where; required for a re-consent)").fill("phoned the desk")
    form.get_by_role("button", name="Record").click()
    history = page.locator("#consent-history table")
    expect(history).to_contain_text("customer-request")
    expect(history).to_contain_text("phoned the desk")
    # A re-consent without its evidence is refused, with the reason, and nothing changes.
    form = page.locator("#record-consent")
    form.get_by_label("Purpose").select_option("marketing")
    form.get_by_role("button", name="Record").click()
    expect(page.get_by_role("alert")).to_contain_text("a re-consent needs its evidence")
    form = page.locator("#record-consent")
    form.get_by_label("Channel").select_option("sms")
    form.get_by_label("Purpose").select_option("marketing")
    form.get_by_label("Time (if known)").fill("18:30")
    form.get_by_label("Evidence (how and where; required for a re-consent)").fill("signed form, ref 77")
    form.get_by_role("button", name="Record").click()
    row = page.locator("#consent-history tbody tr", has_text="signed form, ref 77")
    expect(row).to_contain_text("2026-05-10 18:30")
    expect(row).to_contain_text("re-consent")
    expect(row).to_contain_text("Granted")
    shot(page, "console-consent-history.png")


def test_filter_events_and_retry_a_failed_one(page: Page, server: str, world: World) -> None:
    sign_in(page, server, "manager@north.example")
    page.get_by_role("link", name="Events").click()
    page.get_by_label("Status").select_option("failed")
    page.get_by_label("Day").fill("2026-05-10")
    page.get_by_role("button", name="Filter").click()
    table = page.locator("#event-table")
    expect(table).to_contain_text("[21211] provider said: invalid number")
    expect(table.locator("tbody tr")).to_have_count(1)  # other days and statuses are filtered out
    page.get_by_label(f"Select #{world.failed_event}").check()
    page.get_by_role("button", name="Retry selected failed events").click()
    expect(page.get_by_role("status")).to_have_text("1 events marked planned; the next care run sends them.")
    expect(page.locator("#event-table")).not_to_contain_text("invalid number")


def test_phone_sized_screen_in_chinese(browser: Browser, server: str) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN")
    page = context.new_page()
    page.goto(server + "/login")
    expect(page.get_by_role("heading", name="登录")).to_be_visible()
    page.get_by_label("电子邮箱").fill("marketer@north.example")
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("仪表盘")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"page is {width}px wide on a 390px screen"
    page.get_by_role("link", name="消息模板").click()
    page.get_by_role("row", name="birthday sms zh_CN").get_by_role("link").first.click()
    expect(page.locator("#preview-body")).to_contain_text("生日快乐")
    expect(page.locator("#segments")).to_contain_text("UCS-2")
    shot(page, "console-mobile-zh.png")
    context.close()
