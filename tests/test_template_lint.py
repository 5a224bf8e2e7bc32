"""Template lint: one finding per kind of problem, and the send path refusing a template that fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from careflow.rendering.lint import FindingKind, LintContext, lint_source, lint_store
from careflow.rendering.sms_segments import count_segments
from careflow.rendering.store import TemplateStore
from careflow.service.care_run import run_day
from careflow.storage.models import EventStatus
from careflow.testing import add_customer, build_runtime, make_settings, parse_instant
from careflow.testing.twilio_server import FakeTwilio
from tests.policy_support import events, twilio_runtime

STORE = TemplateStore()
CTX = LintContext(
    variables={"age"}, samples={"age": 38}, marketing=True, segment_budget=2, center_name="安心汽车"
)


def kinds(
    source: str, name: str = "birthday/sms.zh_CN.j2", ctx: LintContext = CTX
) -> list[tuple[str, int | None]]:
    return [(str(f.kind), f.line) for f in lint_source(STORE, source, name, ctx)]


def test_a_clean_template_has_no_findings() -> None:
    assert (
        kinds("【{{ center.name }}】{{ customer.name }}，生日快乐！{% if age %}{{ age }}岁{% endif %}") == []
    )


def test_syntax_error_names_the_line() -> None:
    assert kinds("hello\n{% if age %}no end") == [("syntax", 2)]
    assert kinds("{{ customer.name | shout }}") == [("syntax", 1)]  # unknown filter


def test_undefined_variables_against_the_plugins_declaration() -> None:
    (finding,) = lint_source(STORE, "Hi\n{{ customer.name }} {{ coupon_code }}", "birthday/sms.en.j2", CTX)
    assert (finding.kind, finding.line) == (FindingKind.UNDEFINED, 2)
    assert "'coupon_code' is not a template variable" in finding.message
    assert finding.as_dict()["template"] == "birthday/sms.en.j2"


@pytest.mark.parametrize(
    "payload",
    [
        "{{ customer.__class__.__mro__ }}",
        "{{ customer['__class__'] }}",
        "{{ customer | attr('format') }}",
        "{{ '{0.__class__}'.format(customer) }}",
        "{% for i in range(100000000) %}x{% endfor %}",
        "{% include customer.name %}",
    ],
)
def test_sandbox_escape_payloads_are_unsafe(payload: str) -> None:
    assert {k for k, _ in kinds(payload)} == {"unsafe"}


def test_segment_budget_counts_ucs2_and_the_footer() -> None:
    # 67 characters fit one UCS-2 segment (70) alone; the 4-character footer pushes it over.
    text = "【{{ center.name }}】" + "尊" * 61
    one = LintContext(variables=set(), marketing=False, segment_budget=1, center_name="安心汽车")
    assert kinds(text, ctx=one) == []
    marketing = LintContext(variables=set(), marketing=True, segment_budget=1, center_name="安心汽车")
    (finding,) = lint_source(STORE, text, "birthday/sms.zh_CN.j2", marketing)
    assert finding.kind is FindingKind.SEGMENTS
    assert "2 SMS segments (UCS-2, 71 units including the opt-out footer)" in finding.message


def test_segment_counting_gsm7_and_ucs2() -> None:
    assert (count_segments("a" * 160).count, count_segments("a" * 161).count) == (1, 2)
    assert count_segments("a" * 306).count == 2 and count_segments("a" * 307).count == 3
    assert (count_segments("好" * 70).count, count_segments("好" * 71).count) == (1, 2)
    assert count_segments("€" * 80).units == 160  # extension characters take two septets
    assert count_segments("a" * 100 + "😀").encoding == "UCS-2"


def test_lint_store_reports_a_missing_locale_and_passes_shipped_templates(tmp_path: Path) -> None:
    override = tmp_path / "tpl"
    (override / "birthday").mkdir(parents=True)
    (override / "birthday" / "sms.fr.j2").write_text("Joyeux anniversaire {{ customer.name }}", "utf-8")
    (override / "anniversary").mkdir()
    (override / "anniversary" / "sms.en.j2").write_text("We miss you, {{ customer.name }}", "utf-8")
    runtime = build_runtime(make_settings(f"sqlite:///{tmp_path / 'c.db'}", templates={"dir": str(override)}))
    try:
        findings = lint_store(runtime)
    finally:
        runtime.close()
    assert [(f.template, str(f.kind)) for f in findings] == [("anniversary/sms.zh_CN.j2", "missing-locale")]


def test_a_template_that_fails_lint_is_never_used_for_a_send(tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    override = tmp_path / "tpl" / "birthday"
    override.mkdir(parents=True)
    (override / "sms.zh_CN.j2").write_text("{{ customer.name }} {{ customer.__class__ }}", "utf-8")
    runtime = twilio_runtime(
        f"sqlite:///{tmp_path / 'c.db'}", fake_twilio, templates={"dir": str(tmp_path / "tpl")}
    )
    try:
        with runtime.sessions.begin() as session:
            add_customer(
                session, external_id="ZH", phone="+8613800000001", birthday=(1990, 5, 11), locale="zh_CN"
            )
            add_customer(
                session, external_id="EN", phone="+8613800000002", birthday=(1990, 5, 11), locale="en"
            )
        run_day(runtime, now=parse_instant("2026-05-11T10:00:00+08:00"))
        by_locale = {e.locale: e for e in events(runtime)}
        broken = by_locale["zh_CN"]
        assert broken.status == EventStatus.FAILED and broken.error_code == "template-lint"
        assert "birthday/sms.zh_CN.j2 fails lint" in (broken.status_reason or "")
        assert "unsafe" in (broken.status_reason or "")
        assert by_locale["en"].status == EventStatus.SENT  # the rest of the run completes
        assert [m.to for m in fake_twilio.messages] == ["+8613800000002"]
    finally:
        runtime.close()


# --- issue 13: centers apart, one counter, render budget ----------------------------------------


def test_lint_store_reports_a_centers_template_that_includes_another_centers(tmp_path: Path) -> None:
    override = tmp_path / "tpl"
    south = override / "centers" / "south" / "birthday"
    south.mkdir(parents=True)
    (south / "sms.en.j2").write_text("South's own offer", "utf-8")
    north = override / "centers" / "north" / "birthday"
    north.mkdir(parents=True)
    (north / "sms.en.j2").write_text(
        "Hi {{ customer.name }}\n"
        "{% if age > 200 %}{% include 'centers/south/birthday/sms.en.j2' %}{% endif %}",
        "utf-8",
    )
    runtime = build_runtime(make_settings(f"sqlite:///{tmp_path / 'c.db'}", templates={"dir": str(override)}))
    try:
        findings = lint_store(runtime)
    finally:
        runtime.close()
    (finding,) = [f for f in findings if f.template == "centers/north/birthday/sms.en.j2"]
    assert (finding.kind, finding.line, str(finding.severity)) == (FindingKind.OTHER_CENTER, 2, "error")
    assert "'centers/south/birthday/sms.en.j2' belongs to center south" in finding.message


def test_one_segment_counter_an_escape_pair_never_straddles_two_parts() -> None:
    # 152 + 2 + 152 = 306 septets, which would fit two parts of 153 if the "€" (escape + char)
    # could be split between them; it cannot, so carriers bill three.
    text = "a" * 152 + "€" + "a" * 152
    assert (count_segments(text).units, count_segments(text).count) == (306, 3)
    ctx = LintContext(variables=set(), marketing=False, segment_budget=2, center_name="x")
    (finding,) = lint_source(STORE, text, "birthday/sms.en.j2", ctx)
    assert finding.kind is FindingKind.SEGMENTS and "renders to 3 SMS segments" in finding.message


@pytest.mark.parametrize(
    ("source", "line"),
    [
        ("Hi\n{% for a in customer.name * 50 %}{% for b in customer.name * 50 %}{% endfor %}{% endfor %}", 2),
        ("Hi\n{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}\n{{ m(0) }}", 2),
    ],
)
def test_a_loop_bomb_or_runaway_recursion_is_a_budget_finding(source: str, line: int) -> None:
    (finding,) = lint_source(STORE, source, "birthday/sms.en.j2", CTX)
    assert (finding.kind, finding.line, str(finding.severity)) == (FindingKind.BUDGET, line, "error")
    assert "birthday/sms.en.j2 line" in str(finding)


def test_a_loop_bomb_is_never_sent(tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    override = tmp_path / "tpl" / "birthday"
    override.mkdir(parents=True)
    (override / "sms.zh_CN.j2").write_text(
        "{% for a in customer.name * 99 %}{% for b in customer.name * 99 %}{% endfor %}{% endfor %}"
        "{{ customer.name }}生日快乐",
        "utf-8",
    )
    runtime = twilio_runtime(
        f"sqlite:///{tmp_path / 'c.db'}", fake_twilio, templates={"dir": str(tmp_path / "tpl")}
    )
    try:
        with runtime.sessions.begin() as session:
            add_customer(
                session, external_id="ZH", phone="+8613800000001", birthday=(1990, 5, 11), locale="zh_CN"
            )
        run_day(runtime, now=parse_instant("2026-05-11T10:00:00+08:00"))
        (event,) = events(runtime)
        assert event.status == EventStatus.FAILED and event.error_code == "template-lint"
        assert "birthday/sms.zh_CN.j2" in (event.status_reason or "")
        assert "budget" in (event.status_reason or "")
        assert fake_twilio.messages == []
    finally:
        runtime.close()
