"""Plugin settings forms generated from a plugin's pydantic schema, with its validation messages."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import ClassVar, Literal

import pytest
from pydantic import Field
from sqlalchemy import select
from starlette.testclient import TestClient

from careflow.care import CarePlugin, Occasion, PlanContext, PluginSettings
from careflow.hookspecs import hookimpl
from careflow.planning.center_settings import plugin_passes
from careflow.storage.models import Center, Role
from careflow.testing import build_runtime, center
from careflow.web.console import console_app
from careflow.web.console.security import add_user
from tests.web.conftest import PASSWORD, Clock, csrf_of, sign_in, world_settings


class ReminderSettings(PluginSettings):
    days_before: int = Field(default=7, ge=1, le=60, description="How many days ahead to remind.")
    tone: Literal["friendly", "formal"] = "friendly"
    signature: str = "Your service team"


class ReminderPlugin(CarePlugin):
    name = "reminder"
    description = "A test plugin with settings of several kinds."
    settings_model = ReminderSettings
    variables: ClassVar[dict[str, str]] = {"days": "days until the appointment"}

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        return []


class ReminderPackage:
    @hookimpl
    def careflow_care_plugins(self) -> list[CarePlugin]:
        return [ReminderPlugin()]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, object]]:
    runtime = build_runtime(world_settings(tmp_path / "forms.db"), extra_plugins=[ReminderPackage()])
    with runtime.sessions.begin() as session:
        add_user(session, "manager@north.example", PASSWORD, Role.CENTER_MANAGER, center(session, "north"))
    with TestClient(console_app(runtime, clock=Clock()), follow_redirects=False) as c:
        yield c, runtime
    runtime.close()


def test_form_fields_come_from_the_schema(client: tuple[TestClient, object]) -> None:
    c, _ = client
    sign_in(c, "manager@north.example")
    page = c.get("/plugins/reminder").text
    assert 'type="number"' in page and 'min="1"' in page and 'max="60"' in page
    assert "How many days ahead to remind." in page
    assert "<option selected>friendly</option>" in page and "<option >formal</option>" in page
    assert 'name="signature"' in page and 'type="checkbox" name="enabled"' in page


def test_invalid_values_are_shown_beside_their_fields_and_nothing_is_stored(
    client: tuple[TestClient, object],
) -> None:
    c, runtime = client
    sign_in(c, "manager@north.example")
    page = c.get("/plugins/reminder")
    response = c.post(
        "/plugins/reminder",
        data={
            "csrf_token": csrf_of(page.text),
            "enabled": "on",
            "days_before": "0",
            "tone": "shouty",
            "signature": "x",
        },
    )
    assert response.status_code == 422
    assert 'id="e-days_before">Input should be greater than or equal to 1' in response.text
    assert 'id="e-tone">Input should be &#39;friendly&#39; or &#39;formal&#39;' in response.text
    with runtime.sessions() as session:  # type: ignore[attr-defined]
        runs = plugin_passes(runtime.registry, runtime.settings, session)  # type: ignore[attr-defined]
    assert "reminder" not in {r.plugin.name for r in runs}


def test_valid_settings_apply_to_that_center_only(client: tuple[TestClient, object]) -> None:
    c, runtime = client
    sign_in(c, "manager@north.example")
    page = c.get("/plugins/reminder")
    response = c.post(
        "/plugins/reminder",
        data={
            "csrf_token": csrf_of(page.text),
            "enabled": "on",
            "days_before": "3",
            "tone": "formal",
            "signature": "北区",
        },
    )
    assert response.status_code == 303
    with runtime.sessions() as session:  # type: ignore[attr-defined]
        north = session.scalar(select(Center).where(Center.code == "north"))
        runs = [
            r
            for r in plugin_passes(runtime.registry, runtime.settings, session)
            if r.plugin.name == "reminder"
        ]  # type: ignore[attr-defined]
    assert len(runs) == 1
    assert runs[0].center_ids == frozenset({north.id})
    assert runs[0].settings.model_dump() == {
        "enabled": True,
        "segments": None,  # every plugin may be limited to segments; this one is not
        "priority": None,  # and may override its priority; this one does not
        "days_before": 3,
        "tone": "formal",
        "signature": "北区",
    }
