"""Survey: asked N days after a visit, replies matched and stored, low scores alert staff, CSAT/NPS report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from careflow.care import InboundReply
from careflow.cli import main
from careflow.customers.survey_report import survey_figures
from careflow.errors import ConfigError
from careflow.planning.plan import plan
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import Customer, SurveyResponse
from careflow.testing import add_customer, add_visit, loaded_customers, parse_instant
from careflow_plugins.survey import STAFF_EXTERNAL_ID, parse_score
from tests.plugins.helpers import events, recipients, runtime_with

STAFF_PHONE = "+8613900000001"


@pytest.fixture
def runtime(careflow_db_url: str) -> Iterator[Runtime]:
    rt = runtime_with(careflow_db_url, {"survey": {"staff_phone": STAFF_PHONE}})
    yield rt
    rt.close()


@pytest.fixture
def runtime_any_db(db_url: str) -> Iterator[Runtime]:
    """The same runtime on SQLite and on PostgreSQL, for tests whose SQL differs between them."""
    rt = runtime_with(db_url, {"survey": {"staff_phone": STAFF_PHONE}})
    yield rt
    rt.close()


def _customer(rt: Runtime, ext: str, visits: list[date], **kw: Any) -> int:
    with rt.sessions.begin() as session:
        c = add_customer(session, external_id=ext, **kw)
        for day in visits:
            add_visit(session, c, day)
        return c.id


def _reply(rt: Runtime, customer_id: int, body: str, at: str) -> None:
    """Exactly what the Twilio webhook does: the hook inside its own transaction."""
    with rt.sessions.begin() as session:
        customer = session.get(Customer, customer_id)
        assert customer is not None
        rt.registry.pm.hook.careflow_reply_received(
            session=session,
            reply=InboundReply(
                customer_id=customer_id,
                center_id=customer.center_id,
                channel="sms",
                from_address=customer.phone or "",
                body=body,
                received_at=parse_instant(at),
                provider_message_id="SM" + "0" * 32,
            ),
        )


def _responses(rt: Runtime) -> list[tuple[int, int, str]]:
    with rt.sessions() as session:
        rows = session.scalars(select(SurveyResponse).order_by(SurveyResponse.id))
        return [(r.visit_id, r.score, r.body) for r in rows]


@pytest.mark.parametrize(
    ("visit", "days_after", "survey_day"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 1)),  # month end
        (date(2028, 2, 27), 3, date(2028, 3, 1)),  # leap year: through Feb 29
        (date(2026, 2, 27), 2, date(2026, 3, 1)),  # common year
        (date(2026, 12, 31), 1, date(2027, 1, 1)),  # year end
    ],
)
def test_due_n_days_after_the_visit(
    careflow_db_url: str, visit: date, days_after: int, survey_day: date
) -> None:
    rt = runtime_with(careflow_db_url, {"survey": {"days_after": days_after}})
    try:
        _customer(rt, "v", [visit])
        for offset in (-1, 0, 1):
            day = date.fromordinal(survey_day.toordinal() + offset)
            plan(rt, now=parse_instant(f"{day.isoformat()}T10:00:00+08:00"), day=day)
        (event,) = events(rt, "survey")
        assert event.due_date == survey_day
    finally:
        rt.close()


def test_local_day_across_a_dst_change(runtime: Runtime) -> None:
    # 2026-03-29 23:30 UTC is already Mar 30 in London (BST began that morning): the survey for a
    # Mar 29 visit is due, the one for Mar 28 is not. A fixed UTC offset would get this wrong.
    _customer(runtime, "mar28", [date(2026, 3, 28)], timezone="Europe/London")
    _customer(runtime, "mar29", [date(2026, 3, 29)], timezone="Europe/London")
    plan(runtime, now=parse_instant("2026-03-29T23:30:00+00:00"))
    assert recipients(runtime, "survey") == ["mar29"]


def test_other_days_visitors_are_never_loaded_and_reruns_are_no_ops(runtime_any_db: Runtime) -> None:
    runtime = runtime_any_db
    _customer(runtime, "yesterday", [date(2026, 5, 10)])
    for i in range(4):
        _customer(runtime, f"other{i}", [date(2026, 5, 1 + i)])
    with loaded_customers() as seen:
        first = plan(runtime, now=parse_instant("2026-05-11T10:00:00+08:00"), day=date(2026, 5, 11))
    assert seen == ["yesterday"]
    again = plan(runtime, now=parse_instant("2026-05-11T15:00:00+08:00"), day=date(2026, 5, 11))
    assert (first.new, again.new, again.already_recorded) == (1, 0, 1)


def test_one_survey_for_two_visits_on_the_same_day(runtime: Runtime) -> None:
    _customer(runtime, "twice", [date(2026, 5, 10), date(2026, 5, 10)])
    plan(runtime, now=parse_instant("2026-05-11T10:00:00+08:00"), day=date(2026, 5, 11))
    assert recipients(runtime, "survey") == ["twice"]


@pytest.mark.parametrize(
    ("locale", "expected"), [("zh_CN", "请回复1-5"), ("en", "Reply with a score from 1 to 5")]
)
def test_templates_render_in_both_locales(careflow_db_url: str, locale: str, expected: str) -> None:
    rt = runtime_with(careflow_db_url, {"survey": {}})
    try:
        _customer(rt, "t", [date(2026, 5, 10)], locale=locale)
        run_day(rt, now=parse_instant("2026-05-11T10:00:00+08:00"))
        (event,) = events(rt, "survey")
        assert event.status == "sent", event.status_reason
        assert expected in (event.body or "")
    finally:
        rt.close()


def test_reply_is_matched_to_the_latest_surveyed_visit_and_low_scores_alert_staff(
    runtime_any_db: Runtime,
) -> None:
    runtime = runtime_any_db
    cid = _customer(runtime, "rater", [date(2026, 5, 1), date(2026, 5, 10)], name="张伟")
    run_day(runtime, now=parse_instant("2026-05-02T10:00:00+08:00"))
    run_day(runtime, now=parse_instant("2026-05-11T10:00:00+08:00"))
    surveys = events(runtime, "survey")
    assert [e.status for e in surveys] == ["sent", "sent"]
    latest_visit = surveys[1].context["visit_id"]

    _reply(runtime, cid, "thanks, all good", "2026-05-11T12:00:00+08:00")  # not a rating: ignored
    _reply(runtime, cid, "１分", "2026-05-11T12:05:00+08:00")  # full-width digit
    assert _responses(runtime) == [(latest_visit, 1, "１分")]
    (followup,) = [e for e in events(runtime, "survey") if e.occasion == "followup"]
    assert (followup.recipient, followup.status, followup.purpose) == (STAFF_PHONE, "planned", "service")

    # A correction replaces the score; the follow-up is not raised twice.
    _reply(runtime, cid, "2", "2026-05-11T12:10:00+08:00")
    assert _responses(runtime) == [(latest_visit, 2, "2")]
    assert len([e for e in events(runtime, "survey") if e.occasion == "followup"]) == 1

    run_day(runtime, now=parse_instant("2026-05-11T13:00:00+08:00"))
    (followup,) = [e for e in events(runtime, "survey") if e.occasion == "followup"]
    assert followup.status == "sent", followup.status_reason
    assert "张伟" in (followup.body or "") and "1分" in (followup.body or "")


def test_high_scores_raise_nothing_and_late_or_unsolicited_replies_are_ignored(runtime: Runtime) -> None:
    happy = _customer(runtime, "happy", [date(2026, 5, 10)])
    late = _customer(runtime, "late", [date(2026, 5, 10)])
    stranger = _customer(runtime, "stranger", [])
    run_day(runtime, now=parse_instant("2026-05-11T10:00:00+08:00"))
    _reply(runtime, happy, "5", "2026-05-11T11:00:00+08:00")
    _reply(runtime, late, "1", "2026-05-19T09:00:00+08:00")  # the reply window (7 days) closed May 18
    _reply(runtime, stranger, "1", "2026-05-11T11:00:00+08:00")
    assert [score for _, score, _ in _responses(runtime)] == [5]
    assert [e.occasion for e in events(runtime, "survey")] == ["survey", "survey"]


def test_follow_up_raised_by_planning_when_staff_contact_comes_later(careflow_db_url: str) -> None:
    rt = runtime_with(careflow_db_url, {"survey": {}})
    try:
        cid = _customer(rt, "unhappy", [date(2026, 5, 10)])
        run_day(rt, now=parse_instant("2026-05-11T10:00:00+08:00"))
        _reply(rt, cid, "1", "2026-05-11T11:00:00+08:00")
        assert [e.occasion for e in events(rt, "survey")] == ["survey"]  # nobody to tell yet
    finally:
        rt.close()
    rt = runtime_with(
        careflow_db_url,
        {"survey": {"staff_email": "service@example.com"}},
        channels={"sms": {"provider": "console"}, "email": {"provider": "console"}},
    )
    try:
        run_day(rt, now=parse_instant("2026-05-12T10:00:00+08:00"))
        (followup,) = [e for e in events(rt, "survey") if e.occasion == "followup"]
        assert (followup.recipient, followup.channel, followup.status) == (
            "service@example.com",
            "email",
            "sent",
        )
        again = plan(rt, now=parse_instant("2026-05-13T10:00:00+08:00"))
        assert again.new == 0
    finally:
        rt.close()


def test_staff_card_gets_no_customer_care(careflow_db_url: str) -> None:
    rt = runtime_with(careflow_db_url, {"survey": {"staff_phone": STAFF_PHONE}, "holidays": {}})
    try:
        _customer(rt, "customer", [])
        plan(rt, now=parse_instant("2026-02-17T10:00:00+08:00"))  # Spring Festival
        assert recipients(rt, "holidays") == ["customer"]
        with rt.sessions() as session:
            staff = session.scalars(select(Customer).where(Customer.is_staff.is_(True))).one()
            assert (staff.external_id, staff.phone) == (STAFF_EXTERNAL_ID, STAFF_PHONE)
    finally:
        rt.close()


def test_bad_staff_contact_is_a_start_up_error(careflow_db_url: str) -> None:
    with pytest.raises(ConfigError, match=r"plugins.survey.*staff_phone.*not a valid phone number"):
        runtime_with(careflow_db_url, {"survey": {"staff_phone": "12345"}})


def test_score_parsing() -> None:
    assert [parse_score(t) for t in ("5", " 4 ", "3分", "2 stars", "5/5", "５", "1!")] == [
        5,
        4,
        3,
        2,
        5,
        5,
        1,
    ]
    assert [parse_score(t) for t in ("0", "6", "10", "great", "5 but slow", "")] == [None] * 6


def _seed_responses(rt: Runtime) -> None:
    """Scores 5,5,4,2 in May and 1,5 in June (center time), stored directly."""
    with rt.sessions.begin() as session:
        c = add_customer(session, external_id="r")
        for i, (score, at) in enumerate(
            [
                (5, "2026-05-02T10:00:00+08:00"),
                (5, "2026-05-03T10:00:00+08:00"),
                (4, "2026-05-04T10:00:00+08:00"),
                (2, "2026-05-31T20:00:00+00:00"),  # June 1 in Shanghai
                (1, "2026-06-02T10:00:00+08:00"),
            ]
        ):
            visit = add_visit(session, c, date(2026, 5, 1 + i))
            session.add(
                SurveyResponse(
                    center_id=c.center_id,
                    customer_id=c.id,
                    visit_id=visit.id,
                    score=score,
                    body=str(score),
                    received_at=parse_instant(at),
                )
            )


def test_csat_and_nps_per_center_month(careflow_db_url: str) -> None:
    rt = runtime_with(careflow_db_url, {"survey": {}})
    try:
        _seed_responses(rt)
        with rt.sessions() as session:
            may, june = survey_figures(session)
        assert (may.month, may.responses, may.csat, may.nps) == ("2026-05", 3, 100.0, pytest.approx(200 / 3))
        assert (june.month, june.responses, june.csat, june.nps) == ("2026-06", 2, 0.0, -100.0)
    finally:
        rt.close()


def test_report_surveys_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "careflow.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "c.db"}"\n[plugins.survey]\nenabled = true\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("CAREFLOW_CONFIG", str(config))
    rt = runtime_with(f"sqlite:///{tmp_path / 'c.db'}", {"survey": {}})
    try:
        _seed_responses(rt)
    finally:
        rt.close()
    result = CliRunner().invoke(main, ["report", "surveys", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["center"], r["month"], r["csat"], r["nps"]) for r in rows] == [
        ("main", "2026-05", 100.0, 66.7),
        ("main", "2026-06", 0.0, -100.0),
    ]
    table = CliRunner().invoke(main, ["report", "surveys"])
    assert "2026-06" in table.output and "-100.0" in table.output
