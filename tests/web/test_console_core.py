"""What the console changes outside itself: published templates are what is sent, center settings plan."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from careflow.delivery.batch import deliver
from careflow.planning.center_settings import plugin_passes
from careflow.planning.plan import plan
from careflow.rendering.lint import lint_draft
from careflow.rendering.sms_segments import count_segments
from careflow.storage.models import CareEvent, Center, CenterPluginSetting, ConsoleUser, EventStatus
from careflow.web.console import console_app
from careflow.web.console.preview import Draft
from careflow.web.console.template_versions import LintFailed, save_version
from tests.web.conftest import World, csrf_of, make_world, sign_in


def _publish(world: World, scope: str, body: str, locale: str = "zh_CN") -> None:
    with world.runtime.sessions.begin() as session:
        center = session.scalar(select(Center).where(Center.code == (scope or "north")))
        assert center is not None
        draft = Draft(scope, "birthday", "sms", locale, body)
        save_version(session, draft, "test@example.com", lint_draft(world.runtime, draft.name, draft.source))


def _send_birthdays(world: World) -> dict[str, str]:
    now = datetime(2026, 5, 11, 1, 0, tzinfo=UTC)
    report = plan(world.runtime, now=now, day=date(2026, 5, 11))
    bodies = {}
    with world.runtime.sessions() as session:
        ids = list(session.scalars(select(CareEvent.id).where(CareEvent.idempotency_key.in_(report.keys))))
    for event_id in ids:
        deliver(world.runtime, event_id)
    with world.runtime.sessions() as session:
        for event in session.scalars(select(CareEvent).where(CareEvent.id.in_(ids))):
            assert event.status == EventStatus.SENT, event.status_reason
            bodies[event.customer.external_id] = event.body or ""
    return bodies


def test_sends_use_the_published_versions_center_override_first(world: World) -> None:
    _publish(world, "", "全局：{{ customer.name }}生日快乐")
    _publish(world, "", "Global: happy birthday {{ customer.name }}", locale="en")
    _publish(world, "north", "北区：{{ customer.name }}，{{ age }}岁生日快乐")
    bodies = _send_birthdays(world)
    assert bodies["N-1"] == "北区：王伟，41岁生日快乐回T退订"
    assert bodies["S-1"] == "Global: happy birthday Emma Clarke Reply STOP to opt out"


def test_a_new_version_is_used_at_once_although_the_file_was_cached(world: World) -> None:
    store = world.runtime.templates
    kwargs = {
        "locale": "en",
        "center_code": "south",
        "center_locale": "en",
        "variables": {"customer": {"name": "A"}, "center": {"name": "S"}},
    }
    assert "Happy birthday" in store.render("birthday", "sms", **kwargs).body  # type: ignore[arg-type]
    _publish(world, "south", "New text for {{ customer.name }}", locale="en")
    assert store.render("birthday", "sms", **kwargs).body == "New text for A"  # type: ignore[arg-type]


def test_publishing_is_refused_when_lint_finds_an_error(world: World) -> None:
    with pytest.raises(LintFailed, match="'coupon' is not a template variable"):
        _publish(world, "north", "Hi {{ customer.name }}, use {{ coupon }}")


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("{{ customer.name.__class__.__mro__ }}", "unsafe"),
        ("{% for x in %}", "syntax"),
        ("{{ nothing_here }}", "undefined-variable"),
        ("{{ customer.name }} " + "很长的短信内容" * 40, "segments"),
    ],
)
def test_lint_names_the_problem(world: World, source: str, kind: str) -> None:
    draft = Draft("north", "birthday", "sms", "zh_CN", source)
    findings = lint_draft(world.runtime, draft.name, draft.source)
    assert kind in {f.kind for f in findings if f.severity == "error"}


def test_missing_locale_is_a_warning(world: World) -> None:
    # A template name that ships no texts at all: zh_CN, the centers' locale, is missing.
    draft = Draft("", "anniversary", "sms", "en", "Happy anniversary, {{ customer.name }}")
    findings = lint_draft(world.runtime, draft.name, draft.source)
    assert [(f.severity, f.kind) for f in findings] == [("warning", "missing-locale")]


def test_a_centers_settings_win_over_careflow_toml_in_planning(world: World) -> None:
    with world.runtime.sessions.begin() as session:
        south = session.scalar(select(Center).where(Center.code == "south"))
        assert south is not None
        session.add(
            CenterPluginSetting(
                center_id=south.id, plugin="birthday", settings={"enabled": False}, updated_by="t"
            )
        )
    with world.runtime.sessions() as session:
        runs = plugin_passes(world.runtime.registry, world.runtime.settings, session)
    assert len(runs) == 1 and runs[0].center_ids is not None and south.id not in runs[0].center_ids
    bodies = _send_birthdays(world)
    assert set(bodies) == {"N-1"}


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("€" * 80, "GSM-7", 1),  # extension characters take two septets each
        ("€" * 81, "GSM-7", 2),
        ("生" * 70, "UCS-2", 1),
        ("生" * 71, "UCS-2", 2),
        ("生" * 134, "UCS-2", 2),
        ("生" * 135, "UCS-2", 3),
        ("", "GSM-7", 0),
    ],
)
def test_sms_segments(text: str, encoding: str, segments: int) -> None:
    counted = count_segments(text)
    assert (counted.encoding, counted.count) == (encoding, segments)


def test_users_add_reads_the_password_from_stdin(world: World, tmp_path: Path) -> None:
    config = tmp_path / "careflow.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "console.db"}"\n[centers.north]\nname = "North Motors"\n'
        f'[centers.south]\nname = "South Auto"\nlocale = "en"\n[plugins.birthday]\nenabled = true\n',
        encoding="utf-8",
    )
    env = {"CAREFLOW_CONFIG": str(config), "PATH": "/usr/bin:/bin"}
    cmd = [
        str(Path(sys.executable).parent / "careflow"),
        "users",
        "add",
        "new@north.example",
        "--role",
        "marketer",
        "--center",
        "north",
        "--password-stdin",
    ]
    done = subprocess.run(
        cmd, input="a long enough secret\n", capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    short = subprocess.run(
        [*cmd[:3], "x@north.example", *cmd[4:]],
        input="short\n",
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert short.returncode == 1 and "too short" in short.stderr
    with world.runtime.sessions() as session:
        user = session.scalar(select(ConsoleUser).where(ConsoleUser.email == "new@north.example"))
        assert (
            user is not None and user.role == "marketer" and "a long enough secret" not in user.password_hash
        )


def test_console_publish_dashboard_and_send_on_sqlite_and_postgresql(db_url: str) -> None:
    """The 0008_console tables and the console's queries on both databases, end to end."""
    world = make_world(db_url)
    try:
        with TestClient(console_app(world.runtime, clock=world.clock), follow_redirects=False) as client:
            sign_in(client, "marketer@north.example")
            editor = client.get("/templates/edit?template=birthday&channel=sms&locale=zh_CN")
            saved = client.post(
                "/templates/save",
                data={
                    "csrf_token": csrf_of(editor.text),
                    "template": "birthday",
                    "channel": "sms",
                    "locale": "zh_CN",
                    "scope": "north",
                    "source": "{{ center.name }}祝{{ customer.name }}生日快乐",
                },
            )
            assert saved.status_code == 303
            dashboard = client.get("/")
            assert dashboard.status_code == 200
            assert "<svg" in dashboard.text
            assert "2026-05-06" in dashboard.text  # the day of the seeded STOP reply
        bodies = _send_birthdays(world)
        assert bodies["N-1"] == "North Motors祝王伟生日快乐回T退订"
    finally:
        world.runtime.close()


def test_careflow_console_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    config = tmp_path / "careflow.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "c.db"}"\n', encoding="utf-8")
    env = {"CAREFLOW_CONFIG": str(config), "PATH": "/usr/bin:/bin"}
    careflow = str(Path(sys.executable).parent / "careflow")
    assert (
        subprocess.run([careflow, "init"], cwd=tmp_path, capture_output=True, env=env, check=False).returncode
        == 0
    )
    done = subprocess.run(
        [careflow, "console"], capture_output=True, text=True, env=env, check=False, timeout=60
    )
    assert done.returncode == 1
    assert "web.secret_key is not set" in done.stderr


def test_another_processs_publish_reaches_sends_once_the_generation_is_rechecked(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import insert

    from careflow.rendering import database as template_db
    from careflow.storage.models import TemplateVersion

    store = world.runtime.templates
    kwargs = {
        "locale": "en",
        "center_code": "south",
        "center_locale": "en",
        "variables": {"customer": {"name": "A"}, "center": {"name": "S"}},
    }
    assert "Happy birthday" in store.render("birthday", "sms", **kwargs).body  # type: ignore[arg-type]
    # A Core insert fires no ORM event: to this process it looks like another process's publish.
    with world.runtime.engine.begin() as conn:
        conn.execute(
            insert(TemplateVersion.__table__).values(
                scope="south",
                template="birthday",
                channel="sms",
                locale="en",
                version=1,
                body="From elsewhere, {{ customer.name }}",
                author="other@example.com",
                created_at=datetime(2026, 5, 10, tzinfo=UTC),
            )
        )
    monkeypatch.setattr(template_db, "GENERATION_TTL_SECONDS", 0.0)
    assert store.render("birthday", "sms", **kwargs).body == "From elsewhere, A"  # type: ignore[arg-type]
