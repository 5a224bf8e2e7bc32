"""Marketer-edited templates: found in the right place, rendered safely, failing loudly and precisely."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from careflow.errors import TemplateBudgetError, TemplateError
from careflow.hookspecs import hookimpl
from careflow.rendering.store import MAX_OUTPUT_CHARS, Rendered, TemplateStore
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import CareEvent, Customer, EventStatus
from careflow.testing import add_customer, build_runtime, make_settings, parse_instant

CUSTOMER = {"name": "Alice Smith", "external_id": "C-1", "city": "Shanghai", "birthday": None}
CENTER = {"code": "main", "name": "Sunset Motors", "help_text": ""}


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def render(
    store: TemplateStore,
    template: str,
    *,
    channel: str = "sms",
    locale: str | None = "en",
    center_code: str = "main",
    center_locale: str = "en",
    marketing: bool = False,
    **variables: Any,
) -> Rendered:
    return store.render(
        template,
        channel,
        locale=locale,
        center_code=center_code,
        center_locale=center_locale,
        variables={"customer": CUSTOMER, "center": CENTER, **variables},
        marketing=marketing,
    )


def render_error(store: TemplateStore, template: str, **kwargs: Any) -> str:
    with pytest.raises(TemplateError) as info:
        render(store, template, **kwargs)
    return str(info.value)


# --- finding the template -------------------------------------------------------------------


def test_shipped_birthday_template_renders_without_any_override() -> None:
    rendered = render(TemplateStore(), "birthday", locale="zh_CN", center_locale="zh_CN", age=30)

    assert rendered.template_name == "birthday/sms.zh_CN.j2"
    assert rendered.locale == "zh_CN"
    assert "Alice Smith" in rendered.body
    assert "30岁" in rendered.body


@pytest.fixture
def greet_dir(tmp_path: Path) -> Path:
    """A template 'greet' in zh_CN, zh, de and en, each saying which file it is."""
    for loc in ("zh_CN", "zh", "de", "en"):
        write(tmp_path, f"greet/sms.{loc}.j2", f"file {loc}")
    return tmp_path


@pytest.mark.parametrize(
    ("locale", "center_locale", "expected"),
    [
        ("zh_CN", "en", "zh_CN"),  # exact match first
        ("zh_TW", "en", "zh"),  # then the language alone
        ("fr_FR", "de_DE", "de"),  # then the center's default
        ("fr", "it", "en"),  # then English
        (None, "de", "de"),  # no customer locale: the center's
    ],
)
def test_locale_falls_back_from_region_to_language_to_center_default_to_english(
    greet_dir: Path, locale: str | None, center_locale: str, expected: str
) -> None:
    store = TemplateStore(override_dir=greet_dir)

    rendered = render(store, "greet", locale=locale, center_locale=center_locale)

    assert rendered.body == f"file {expected}"
    assert rendered.template_name == f"greet/sms.{expected}.j2"
    assert rendered.locale == expected


def test_language_fallback_is_used_before_the_center_default(tmp_path: Path) -> None:
    write(tmp_path, "greet/sms.zh.j2", "chinese")
    write(tmp_path, "greet/sms.en.j2", "english")

    rendered = render(TemplateStore(override_dir=tmp_path), "greet", locale="zh_CN", center_locale="en")

    assert rendered.body == "chinese"


def test_override_directory_beats_the_shipped_template(tmp_path: Path) -> None:
    write(tmp_path, "birthday/sms.en.j2", "Override greets {{ customer.name }}")

    rendered = render(TemplateStore(override_dir=tmp_path), "birthday", locale="en")

    assert rendered.body == "Override greets Alice Smith"


def test_center_override_beats_global_override_for_that_center_only(tmp_path: Path) -> None:
    write(tmp_path, "birthday/sms.en.j2", "global override")
    write(tmp_path, "centers/north/birthday/sms.en.j2", "north's own text")
    store = TemplateStore(override_dir=tmp_path)

    north = render(store, "birthday", center_code="north")
    south = render(store, "birthday", center_code="south")

    assert north.body == "north's own text"
    assert north.template_name == "centers/north/birthday/sms.en.j2"
    assert south.body == "global override"


def test_center_override_beats_the_shipped_template(tmp_path: Path) -> None:
    write(tmp_path, "centers/north/birthday/sms.en.j2", "north birthday")
    store = TemplateStore(override_dir=tmp_path)

    assert render(store, "birthday", center_code="north").body == "north birthday"
    assert "Happy birthday, Alice Smith" in render(store, "birthday", center_code="south").body


def test_missing_template_lists_every_name_tried(tmp_path: Path) -> None:
    message = render_error(
        TemplateStore(override_dir=tmp_path),
        "nosuch",
        locale="zh_CN",
        center_code="north",
        center_locale="de",
    )

    assert "'nosuch'" in message
    for name in (
        "centers/north/nosuch/sms.zh_CN.j2",
        "nosuch/sms.zh_CN.j2",
        "nosuch/sms.zh.j2",
        "nosuch/sms.de.j2",
        "nosuch/sms.en.j2",
    ):
        assert name in message


# --- one center's templates stay its own (issue 13, item 10) ---------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("centers/north/birthday/sms.en.j2", "Hi {% include 'centers/south/birthday/sms.en.j2' %}"),
        ("centers/north/birthday/sms.en.j2", "Hi {% include './centers/south//birthday/sms.en.j2' %}"),
        ("centers/north/birthday/sms.en.j2", "{% extends 'centers/south/birthday/sms.en.j2' %}"),
        (
            "centers/north/birthday/sms.en.j2",
            "{% from 'centers/south/birthday/sms.en.j2' import offer %}{{ offer() }}",
        ),
        ("birthday/sms.en.j2", "{% include 'centers/south/birthday/sms.en.j2' %}"),  # a global text
    ],
)
def test_a_render_for_one_center_cannot_reach_another_centers_template(
    tmp_path: Path, name: str, text: str
) -> None:
    write(
        tmp_path, "centers/south/birthday/sms.en.j2", "{% macro offer() %}South's 30% off{% endmacro %}SOUTH"
    )
    write(tmp_path, name, text)

    message = render_error(TemplateStore(override_dir=tmp_path), "birthday", center_code="north")

    assert message.startswith(name)
    assert "another center's template" in message
    assert "belongs to center south" in message
    assert "South" not in message.replace("centers/south", "")


def test_a_center_still_includes_its_own_and_global_templates(tmp_path: Path) -> None:
    write(tmp_path, "snippets/sign.en.j2", "-- the team")
    write(tmp_path, "centers/north/snippets/hours.en.j2", "open 8-18")
    write(
        tmp_path,
        "centers/north/birthday/sms.en.j2",
        "Hi {% include 'centers/north/snippets/hours.en.j2' %} {% include 'snippets/sign.en.j2' %}",
    )

    rendered = render(TemplateStore(override_dir=tmp_path), "birthday", center_code="north")

    assert rendered.body == "Hi open 8-18 -- the team"


# --- render budget (issue 13, item 13) ------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        # nested loops over a long string: no output, all work
        "{% for a in customer.name * 40 %}{% for b in customer.name * 40 %}{% endfor %}{% endfor %}x",
        "{% for a in customer.name * 5000 if a == '!' %}{% endfor %}x",  # a filter that skips everything
        "{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}",  # recursion
        "x{% include 't/sms.en.j2' %}",  # a template that includes itself
        "{{ ('x' * 100000000) | length }}",  # one operation building 100 MB
    ],
)
def test_a_render_that_exceeds_the_budget_is_a_template_error(tmp_path: Path, source: str) -> None:
    write(tmp_path, "t/sms.en.j2", source)

    with pytest.raises(TemplateBudgetError) as info:
        render(TemplateStore(override_dir=tmp_path), "t")

    assert str(info.value).startswith("t/sms.en.j2")
    assert "render budget exceeded" in str(info.value)


def test_loops_within_the_budget_render_as_before(tmp_path: Path) -> None:
    write(
        tmp_path,
        "t/sms.en.j2",
        "{% for v in vouchers if v.value %}{{ loop.index }}/{{ loop.length }} {{ v.code }} {% endfor %}",
    )
    vouchers = [{"code": f"V{i}", "value": i} for i in range(200)]

    body = render(TemplateStore(override_dir=tmp_path), "t", vouchers=vouchers).body

    assert body.startswith("1/199 V1 2/199 V2") and body.endswith("199/199 V199")


# --- filters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "expected"),
    [("zh_CN", "2026年5月11日"), ("en", "May 11, 2026")],
)
@pytest.mark.parametrize("due_date", ["2026-05-11", date(2026, 5, 11)])
def test_date_filter_formats_in_the_customer_language(
    tmp_path: Path, locale: str, expected: str, due_date: object
) -> None:
    write(tmp_path, f"t/sms.{locale}.j2", "Due {{ due_date | date }}")

    rendered = render(TemplateStore(override_dir=tmp_path), "t", locale=locale, due_date=due_date)

    assert rendered.body == f"Due {expected}"


@pytest.mark.parametrize(
    ("locale", "expected"),
    [("zh_CN", "¥1,234.50 / US$99.00"), ("en", "CN¥1,234.50 / $99.00")],
)
def test_money_filter_shows_the_currency_as_the_locale_expects(
    tmp_path: Path, locale: str, expected: str
) -> None:
    write(tmp_path, f"t/sms.{locale}.j2", "{{ amount | money }} / {{ 99 | money('USD') }}")

    rendered = render(TemplateStore(override_dir=tmp_path), "t", locale=locale, amount="1234.5")

    assert rendered.body == expected


# --- errors ---------------------------------------------------------------------------------


def test_undefined_variable_names_template_line_and_variable(tmp_path: Path) -> None:
    write(tmp_path, "t/sms.en.j2", "Hello {{ customer.name }},\nyour code is {{ voucher_code }}.")

    message = render_error(TemplateStore(override_dir=tmp_path), "t")

    assert "t/sms.en.j2" in message
    assert "line 2" in message
    assert "voucher_code" in message
    assert "undefined" in message


def test_undefined_attribute_names_the_attribute(tmp_path: Path) -> None:
    write(tmp_path, "t/sms.en.j2", "Hi\n\n{{ customer.nickname }}")

    message = render_error(TemplateStore(override_dir=tmp_path), "t")

    assert "t/sms.en.j2 line 3" in message
    assert "nickname" in message


def test_error_inside_a_body_block_reports_the_template_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        "t/email.en.j2",
        "{% block subject %}For {{ customer.name }}{% endblock %}\n"
        "{% block body %}\nDear {{ customer.name }},\n{{ missing_offer }}\n{% endblock %}",
    )

    message = render_error(TemplateStore(override_dir=tmp_path), "t", channel="email")

    assert "t/email.en.j2 line 4" in message
    assert "missing_offer" in message


def test_subject_and_body_blocks_render_separately(tmp_path: Path) -> None:
    write(
        tmp_path,
        "t/email.en.j2",
        "{% block subject %}For {{ customer.name }}{% endblock %}\n"
        "{% block body %}Dear {{ customer.name }}{% endblock %}",
    )

    rendered = render(TemplateStore(override_dir=tmp_path), "t", channel="email")

    assert rendered.subject == "For Alice Smith"
    assert rendered.body == "Dear Alice Smith"


def test_syntax_error_names_template_and_line(tmp_path: Path) -> None:
    write(tmp_path, "t/sms.en.j2", "Hello\n{% if customer.name %}\nno endif here")

    message = render_error(TemplateStore(override_dir=tmp_path), "t")

    assert "t/sms.en.j2" in message
    assert "syntax error" in message
    assert "line 3" in message


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ customer.__class__ }}",
        "{{ customer.update({'name': 'Mallory'}) }}",  # the immutable sandbox forbids mutation
        "{{ tags.append('vip') }}",
        "{{ 'x{0.__class__}'.format(1) }}",  # str.format cannot reach attributes either
    ],
)
def test_sandbox_violation_is_a_template_error(tmp_path: Path, source: str) -> None:
    write(tmp_path, "t/sms.en.j2", f"Hello\n{source}")
    tags = ["regular"]

    message = render_error(TemplateStore(override_dir=tmp_path), "t", tags=tags)

    assert "t/sms.en.j2" in message
    assert "not allowed in templates" in message
    assert tags == ["regular"]


def test_bad_value_for_a_filter_is_a_template_error(tmp_path: Path) -> None:
    write(tmp_path, "t/sms.en.j2", "Due {{ due_date | date }}")

    message = render_error(TemplateStore(override_dir=tmp_path), "t", due_date="next week")

    assert "t/sms.en.j2" in message
    assert "next week" in message


def test_empty_render_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "t/sms.en.j2", "{% if customer.city == 'Atlantis' %}Hi{% endif %}\n   \n")

    message = render_error(TemplateStore(override_dir=tmp_path), "t", marketing=True)

    assert "t/sms.en.j2" in message
    assert "empty" in message


def test_output_over_the_size_limit_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "t/sms.en.j2", "{{ 'x' * n }}")
    store = TemplateStore(override_dir=tmp_path)

    assert len(render(store, "t", n=MAX_OUTPUT_CHARS).body) == MAX_OUTPUT_CHARS
    message = render_error(store, "t", n=MAX_OUTPUT_CHARS + 1)
    assert "t/sms.en.j2" in message
    assert str(MAX_OUTPUT_CHARS) in message


# --- marketing footer -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "text", "expected"),
    [
        ("en", "Hi {{ customer.name }}!", "Hi Alice Smith! Reply STOP to opt out"),
        ("zh_CN", "{{ customer.name }}您好！", "Alice Smith您好！回T退订"),
    ],
)
def test_marketing_sms_gets_the_opt_out_footer(tmp_path: Path, locale: str, text: str, expected: str) -> None:
    write(tmp_path, f"t/sms.{locale}.j2", text)
    store = TemplateStore(override_dir=tmp_path)

    assert render(store, "t", locale=locale, marketing=True).body == expected
    assert "STOP" not in render(store, "t", locale=locale, marketing=False).body
    assert "回T退订" not in render(store, "t", locale=locale, marketing=False).body


@pytest.mark.parametrize(
    ("locale", "text", "footer"),
    [
        ("en", "Reply STOP to opt out. Hi {{ customer.name }}!", "Reply STOP to opt out"),
        ("zh_CN", "{{ customer.name }}您好！回T退订", "回T退订"),
    ],
)
def test_footer_already_in_the_template_is_not_repeated(
    tmp_path: Path, locale: str, text: str, footer: str
) -> None:
    write(tmp_path, f"t/sms.{locale}.j2", text)

    body = render(TemplateStore(override_dir=tmp_path), "t", locale=locale, marketing=True).body

    assert body.count(footer) == 1


# --- end to end -----------------------------------------------------------------------------


class DeliveryLog:
    """Records every event the provider accepted."""

    def __init__(self) -> None:
        self.event_ids: list[int] = []

    @hookimpl
    def careflow_event_delivered(self, event: CareEvent) -> None:
        self.event_ids.append(event.id)


@pytest.fixture
def deliveries() -> DeliveryLog:
    return DeliveryLog()


@pytest.fixture
def broken_override_runtime(
    careflow_db_url: str, tmp_path: Path, deliveries: DeliveryLog
) -> Iterator[Runtime]:
    override = tmp_path / "override"
    write(override, "birthday/sms.en.j2", "Hello {{ customer.name }}, {{ customer.nickname }}!")
    settings = make_settings(
        careflow_db_url,
        plugins={"birthday": {"enabled": True}},
        templates={"dir": str(override)},
        centers={"main": {"name": "浦东汽车服务中心", "timezone": "Asia/Shanghai", "locale": "zh_CN"}},
    )
    runtime = build_runtime(settings, extra_plugins=[deliveries])
    yield runtime
    runtime.close()


def test_broken_override_fails_only_its_event_and_sends_nothing_half_rendered(
    broken_override_runtime: Runtime, deliveries: DeliveryLog, capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = broken_override_runtime
    with runtime.sessions.begin() as session:
        add_customer(session, external_id="en", name="Alice Smith", birthday=(1990, 5, 11), locale="en")
        add_customer(session, external_id="zh1", name="张伟", birthday=(1985, 5, 11), locale="zh_CN")
        add_customer(session, external_id="zh2", name="李娜", birthday=(None, 5, 11), locale="zh_CN")

    run_day(runtime, now=parse_instant("2026-05-11T02:00:00+00:00"))

    with runtime.sessions() as session:
        rows = session.execute(
            select(Customer.external_id, CareEvent).join(Customer, CareEvent.customer_id == Customer.id)
        ).all()
    events = {external_id: event for external_id, event in rows}
    assert set(events) == {"en", "zh1", "zh2"}

    broken = events["en"]
    assert broken.status == EventStatus.FAILED
    assert broken.error_code == "template-lint"  # refused by lint before any render is attempted
    assert broken.status_reason is not None
    assert "birthday/sms.en.j2" in broken.status_reason
    assert "nickname" in broken.status_reason
    assert broken.body is None
    assert broken.provider_message_id is None

    for key in ("zh1", "zh2"):
        assert events[key].status == EventStatus.SENT
        assert events[key].body is not None
    assert sorted(deliveries.event_ids) == sorted([events["zh1"].id, events["zh2"].id])

    printed = capsys.readouterr().err
    assert "张伟" in printed and "李娜" in printed  # the console did print the good ones
    assert "Alice Smith" not in printed


def test_a_cards_city_is_written_in_the_messages_language(careflow_db_url: str, tmp_path: Path) -> None:
    """Cards keep one canonical city (深圳, so weather alerts match); an English text says Shenzhen."""
    override = tmp_path / "override"
    write(override, "birthday/sms.en.j2", "{{ customer.name }} in {{ customer.city }}")
    write(override, "birthday/sms.zh_CN.j2", "{{ customer.name }}在{{ customer.city }}")
    settings = make_settings(
        careflow_db_url, plugins={"birthday": {"enabled": True}}, templates={"dir": str(override)}
    )
    runtime = build_runtime(settings)
    try:
        with runtime.sessions.begin() as session:
            add_customer(session, external_id="en", name="Emma", birthday=(1990, 5, 11), city="深圳")
            add_customer(
                session, external_id="zh", name="张伟", birthday=(1990, 5, 11), city="深圳", locale="zh_CN"
            )
        run_day(runtime, now=parse_instant("2026-05-11T10:00:00+08:00"))
        with runtime.sessions() as session:
            bodies = sorted(b for b in session.scalars(select(CareEvent.body)) if b)
    finally:
        runtime.close()
    assert bodies[0].startswith("Emma in Shenzhen") and bodies[1].startswith("张伟在深圳")


# --- e-mail templates of the built-in plugins -----------------------------------------------

# Occasions that switch a template's wording, beyond each plugin's declared ``samples``.
EMAIL_VARIANTS: dict[str, list[dict[str, Any]]] = {
    "maintenance": [
        {"occasion": "service-soon"},
        {"occasion": "service-due", "days_left": 0},
        {"occasion": "service-due", "days_left": -9},  # late: overdue wording, not "today"
        {"occasion": "warranty-ending"},
        {"occasion": "service-due", "model": None, "vouchers": [], "reason": "mileage"},
    ],
    "points": [{"occasion": o} for o in ("threshold", "points-expiring", "voucher-expiring")],
    "weather": [{"kind": k} for k in ("typhoon", "rainstorm", "snow", "cold_wave", "heat", "hail")],
    "holidays": [{"holiday": h} for h in ("spring_festival", "mid_autumn", "national_day", "christmas")],
}


@pytest.mark.parametrize("locale", ["zh_CN", "en"])
@pytest.mark.parametrize("plugin", ["maintenance", "weather", "holidays", "points", "survey", "winback"])
def test_every_builtin_plugin_has_its_own_email_with_subject_text_and_html(plugin: str, locale: str) -> None:
    from careflow.plugin_manager import load_plugins
    from careflow.rendering.lint import core_samples

    samples = load_plugins().care_plugins[plugin].samples
    store = TemplateStore()
    for variant in [{}, *EMAIL_VARIANTS.get(plugin, [])]:
        variables = {**core_samples(locale, "Sunset Motors"), **samples, **variant}
        rendered = store.render(
            plugin, "email", locale=locale, center_code="main", center_locale="en", variables=variables
        )
        # Its own e-mail, not the SMS text with the center's name for a subject.
        assert rendered.template_name == f"{plugin}/email.{locale}.j2", variant
        assert rendered.subject and "\n" not in rendered.subject and rendered.subject != "Sunset Motors"
        assert variables["customer"]["name"] in rendered.body and "Sunset Motors" in rendered.body
        assert "{{" not in rendered.body and "{%" not in rendered.body
        assert rendered.html is not None and rendered.html.startswith("<p>")
        assert "\n\n" in rendered.body  # paragraphs, which the HTML part keeps


@pytest.mark.parametrize("locale", ["zh_CN", "en"])
def test_maintenance_email_for_a_late_car_says_it_was_due_not_that_today_is_the_day(locale: str) -> None:
    from careflow.plugin_manager import load_plugins
    from careflow.rendering.lint import core_samples

    samples = load_plugins().care_plugins["maintenance"].samples
    variables = {
        **core_samples(locale, "Sunset Motors"),
        **samples,
        "occasion": "service-due",
        "days_left": -9,
    }
    rendered = TemplateStore().render(
        "maintenance", "email", locale=locale, center_code="main", center_locale="en", variables=variables
    )
    overdue = {"en": "overdue for service", "zh_CN": "已超过保养时间"}[locale]
    today = {"en": "today", "zh_CN": "今天"}[locale]
    assert rendered.subject is not None and overdue in rendered.subject
    assert today not in rendered.body
