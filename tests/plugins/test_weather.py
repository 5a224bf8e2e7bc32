"""Weather: thresholds per kind, one provider call per city and day, failures isolated per city."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from careflow.care import PluginSettings
from careflow.customers.cities import ambiguity, canonical_city
from careflow.customers.import_customers import CustomerImporter
from careflow.customers.segments import refresh_segments
from careflow.errors import ConfigError, ImportDataError
from careflow.planning.plan import plan
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.service.scheduler import SchedulerService
from careflow.storage.models import Customer, WeatherReport
from careflow.testing import add_customer, center, loaded_customers, parse_instant
from careflow.testing.openmeteo_server import FakeOpenMeteo
from careflow_plugins.weather import WeatherSettings
from careflow_plugins.weather_sources import (
    AlertFileProvider,
    Thresholds,
    WeatherProviderError,
    kinds_on,
    read_alert_file,
)
from tests.plugins.helpers import events, recipients, runtime_with

SHANGHAI = (31.23, 121.47)
BEIJING = (39.9, 116.4)
CITIES = {"Shanghai": list(SHANGHAI), "Beijing": list(BEIJING)}
DAY = date(2026, 7, 20)
NOW = parse_instant("2026-07-20T08:00:00+08:00")


@pytest.fixture
def openmeteo() -> Iterator[FakeOpenMeteo]:
    with FakeOpenMeteo() as server:
        yield server


def _open_meteo_runtime(db_url: str, server: FakeOpenMeteo, **extra: Any) -> Runtime:
    cfg = {
        "provider": "open-meteo",
        "open_meteo_url": server.url,
        "cities": CITIES,
        "timeout_seconds": 5,
        **extra,
    }
    return runtime_with(db_url, {"weather": cfg}, scheduler={"batch_size": 2})


def _add(rt: Runtime, ext: str, city: str | None, **kw: Any) -> None:
    with rt.sessions.begin() as session:
        add_customer(session, external_id=ext, city=city, **kw)


CALM = {"weather_code": 1, "temperature_2m_max": 22.0, "temperature_2m_min": 15.0, "precipitation_sum": 0.0}


@pytest.mark.parametrize(
    ("values", "previous", "expected"),
    [
        ({"precipitation_sum": 49.9}, None, []),
        ({"precipitation_sum": 50.0}, None, ["rainstorm"]),
        ({"weather_code": 65}, None, ["rainstorm"]),
        ({"snowfall_sum": 4.9}, None, []),
        ({"snowfall_sum": 5.0}, None, ["snow"]),
        ({"weather_code": 75}, None, ["snow"]),
        ({"weather_code": 96}, None, ["hail"]),
        ({"weather_code": 99}, None, ["hail"]),
        ({"temperature_2m_max": 34.9}, None, []),
        ({"temperature_2m_max": 35.0}, None, ["heat"]),
        ({"wind_gusts_10m_max": 61.9}, None, []),
        ({"wind_gusts_10m_max": 62.0}, None, ["strong_wind"]),
        ({"wind_gusts_10m_max": 118.0, "precipitation_sum": 120.0}, None, ["typhoon", "rainstorm"]),
        # Cold wave: min at or below 4 °C after a drop of at least 8 °C from the day before.
        ({"temperature_2m_min": 4.0}, {"temperature_2m_min": 12.0}, ["cold_wave"]),
        ({"temperature_2m_min": 4.0}, {"temperature_2m_min": 11.9}, []),
        ({"temperature_2m_min": 4.1}, {"temperature_2m_min": 20.0}, []),
        ({"temperature_2m_min": -10.0}, None, []),  # cold, but no drop known: not a wave
        ({"weather_code": None, "precipitation_sum": None}, None, []),  # missing values are no alert
    ],
)
def test_thresholds_per_kind(
    values: dict[str, Any], previous: dict[str, Any] | None, expected: list[str]
) -> None:
    assert kinds_on({**CALM, **values}, previous and {**CALM, **previous}, Thresholds()) == expected


def test_thresholds_are_configurable(tmp_path: Path, openmeteo: FakeOpenMeteo) -> None:
    rt = _open_meteo_runtime(
        f"sqlite:///{tmp_path / 'c.db'}", openmeteo, thresholds={"heat_c": 30, "rainstorm_mm": 20}
    )
    try:
        _add(rt, "sh", "Shanghai")
        openmeteo.set_day(SHANGHAI, DAY, temperature_2m_max=31.0, precipitation_sum=25.0)
        plan(rt, now=NOW)
        assert sorted(e.context["kind"] for e in events(rt, "weather")) == ["heat", "rainstorm"]
    finally:
        rt.close()


def test_one_provider_call_per_city_per_refresh_interval(db_url: str, openmeteo: FakeOpenMeteo) -> None:
    rt = _open_meteo_runtime(db_url, openmeteo)  # refresh_minutes: 60 by default
    try:
        for i in range(5):  # batch_size 2: three batches, each with Shanghai customers
            _add(rt, f"sh{i}", "Shanghai")
        _add(rt, "bj", "Beijing")
        _add(rt, "nowhere", None)
        openmeteo.set_day(SHANGHAI, DAY, precipitation_sum=80.0)
        first = plan(rt, now=NOW)
        assert (openmeteo.requests_for(SHANGHAI), openmeteo.requests_for(BEIJING)) == (1, 1)
        assert first.new == 5 and sorted(recipients(rt, "weather")) == [f"sh{i}" for i in range(5)]
        again = plan(rt, now=parse_instant("2026-07-20T08:59:00+08:00"))  # within the hour: stored answer
        assert len(openmeteo.requests) == 2 and again.new == 0 and again.already_recorded == 5
        later = plan(rt, now=parse_instant("2026-07-20T18:00:00+08:00"))  # asked again, the same storm
        assert len(openmeteo.requests) == 4 and later.new == 0 and later.already_recorded == 5
        plan(rt, now=parse_instant("2026-07-21T08:00:00+08:00"))  # a new day asks again
        assert len(openmeteo.requests) == 6
    finally:
        rt.close()


def test_one_storm_is_one_message(tmp_path: Path, openmeteo: FakeOpenMeteo) -> None:
    rt = _open_meteo_runtime(f"sqlite:///{tmp_path / 'c.db'}", openmeteo)
    try:
        _add(rt, "sh", "Shanghai")
        for day in (date(2026, 7, 21), date(2026, 7, 22), date(2026, 7, 23)):  # a three-day storm
            openmeteo.set_day(SHANGHAI, day, precipitation_sum=90.0)
        for day in (20, 21, 22, 23):  # warned the day before, then every day of the storm
            plan(rt, now=parse_instant(f"2026-07-{day}T08:00:00+08:00"))
        (event,) = events(rt, "weather")
        assert event.context["alert_day"] == "2026-07-21" and event.due_date == DAY
    finally:
        rt.close()


@pytest.mark.parametrize(
    ("status", "body", "reported"),
    [
        (500, b'{"error":true,"reason":"Internal"}', "Open-Meteo answered HTTP 500"),
        (200, b"<html>maintenance</html>", "malformed response: not JSON"),
        (200, b'{"daily": {"time": ["2026-07-18"]}}', "malformed response: daily.weather_code missing"),
        (200, b'{"daily": {"time": ["2026-07-18"], "weather_code": ["x"]}}', "malformed response"),
        (200, b"[]", "malformed response: expected a JSON object"),
    ],
)
def test_a_failing_city_is_reported_and_skipped_alone(
    tmp_path: Path, openmeteo: FakeOpenMeteo, status: int, body: bytes, reported: str
) -> None:
    rt = _open_meteo_runtime(f"sqlite:///{tmp_path / 'c.db'}", openmeteo)
    try:
        _add(rt, "sh", "Shanghai")
        _add(rt, "bj", "Beijing")
        openmeteo.set_day(SHANGHAI, DAY, precipitation_sum=80.0)
        openmeteo.set_day(BEIJING, DAY, precipitation_sum=80.0)
        openmeteo.fail(BEIJING, status, body)
        report = plan(rt, now=NOW)
        assert recipients(rt, "weather") == ["sh"]
        (failure,) = report.failures
        assert failure.plugin == "weather" and "Beijing" in failure.error and reported in failure.error
        # Failures are not cached: once the provider recovers, the next run asks again and cares
        # (within the refresh interval, which keeps Shanghai's good answer).
        openmeteo.heal(BEIJING)
        plan(rt, now=parse_instant("2026-07-20T08:30:00+08:00"))
        assert sorted(recipients(rt, "weather")) == ["bj", "sh"]
        assert openmeteo.requests_for(BEIJING) == 2 and openmeteo.requests_for(SHANGHAI) == 1
    finally:
        rt.close()


def test_provider_down_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rt = runtime_with(
        f"sqlite:///{tmp_path / 'c.db'}",
        {"weather": {"open_meteo_url": f"http://127.0.0.1:{port}/v1/forecast", "cities": CITIES}},
    )
    try:
        _add(rt, "sh", "Shanghai")
        report = plan(rt, now=NOW)
        assert events(rt, "weather") == []
        assert ["Open-Meteo unreachable" in f.error and "Shanghai" in f.error for f in report.failures] == [
            True
        ]
    finally:
        rt.close()


def test_city_without_coordinates_is_reported(tmp_path: Path, openmeteo: FakeOpenMeteo) -> None:
    rt = _open_meteo_runtime(f"sqlite:///{tmp_path / 'c.db'}", openmeteo)
    try:
        _add(rt, "x", "Atlantis")
        report = plan(rt, now=NOW)
        (failure,) = report.failures
        assert failure.error == "no weather care in Atlantis: no coordinates in [plugins.weather.cities]"
        assert openmeteo.requests == []
    finally:
        rt.close()


def _alert_file(tmp_path: Path, rows: list[dict[str, str]], suffix: str = ".csv") -> Path:
    path = tmp_path / f"alerts{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps({"alerts": rows}, ensure_ascii=False), encoding="utf-8")
    else:
        lines = ["id,city,kind,starts,ends,headline"]
        lines += [
            ",".join(r.get(k, "") for k in ("id", "city", "kind", "starts", "ends", "headline")) for r in rows
        ]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


KINDS_ADVICE = {
    "typhoon": ("台风", "high ground"),
    "rainstorm": ("积水", "flooded roads"),
    "snow": ("积雪", "clear all snow"),
    "cold_wave": ("防冻液", "battery"),
    "heat": ("暴晒", "shade"),
    "hail": ("车衣", "cover the car"),
    "strong_wind": ("广告牌", "scaffolding"),
}


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_file_provider_every_kind_in_both_locales(tmp_path: Path, suffix: str) -> None:
    rows = [
        {"id": f"SH-{kind}", "city": "Shanghai", "kind": kind, "starts": "2026-07-20", "ends": "2026-07-21"}
        for kind in KINDS_ADVICE
    ]
    rows.append(
        {"id": "BJ-1", "city": "Beijing", "kind": "heat", "starts": "2026-07-25", "headline": "高温橙色预警"}
    )
    path = _alert_file(tmp_path, rows, suffix)
    rt = runtime_with(
        f"sqlite:///{tmp_path / 'c.db'}", {"weather": {"provider": "file", "alerts_file": str(path)}}
    )
    try:
        _add(rt, "zh", "Shanghai", locale="zh_CN")
        _add(rt, "en", "Shanghai", locale="en")
        _add(rt, "bj", "Beijing")  # its alert starts later: nothing today
        run_day(rt, now=NOW)
        sent = events(rt, "weather")
        assert len(sent) == 14 and {e.status for e in sent} == {"sent"}
        for e in sent:
            zh_word, en_word = KINDS_ADVICE[e.context["kind"]]
            assert (zh_word if e.locale == "zh_CN" else en_word) in (e.body or ""), e.body
        run_day(rt, now=parse_instant("2026-07-21T08:00:00+08:00"))  # the same alerts the next day
        assert len(events(rt, "weather")) == 14
    finally:
        rt.close()


def test_alert_file_errors_name_row_and_field(tmp_path: Path) -> None:
    path = _alert_file(
        tmp_path,
        [
            {"id": "ok", "city": "Shanghai", "kind": "heat", "starts": "2026-07-20"},
            {"id": "", "city": "Shanghai", "kind": "tornado", "starts": "2026-07-32"},
            {"id": "late", "city": "Shanghai", "kind": "snow", "starts": "2026-07-20", "ends": "2026-07-19"},
        ],
    )
    with pytest.raises(WeatherProviderError) as caught:
        read_alert_file(path)
    message = str(caught.value)
    assert "row 3, field id: required" in message
    assert "row 3, field kind: 'tornado' is not one of" in message
    assert "row 3, field starts: '2026-07-32' is not a date" in message
    assert "row 4, field ends: before starts" in message
    bad_json = tmp_path / "alerts.json"
    bad_json.write_text(
        '[{"id": "a", "city": "Shanghai", "kind": "heat", "starts": "2026-07-20", "colour": "red"}]'
    )
    with pytest.raises(WeatherProviderError, match=r"alert 1, field colour: unknown field"):
        read_alert_file(bad_json)
    header = tmp_path / "h.csv"
    header.write_text("id,town,kind,starts\n")
    with pytest.raises(WeatherProviderError, match=r"row 1: unknown column 'town'; missing column 'city'"):
        read_alert_file(header)


def test_file_provider_error_is_reported_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "alerts.csv"
    path.write_text("id,city,kind,starts\nA,Shanghai,monsoon,2026-07-20\n", encoding="utf-8")
    rt = runtime_with(
        f"sqlite:///{tmp_path / 'c.db'}",
        {"weather": {"provider": "file", "alerts_file": str(path)}, "birthday": {}},
    )
    try:
        _add(rt, "sh", "Shanghai", birthday=(1990, 7, 20))
        report = plan(rt, now=NOW)
        assert any("row 2, field kind" in f.error for f in report.failures)
        assert recipients(rt, "birthday") == ["sh"]  # the rest of the run went on
    finally:
        rt.close()


def test_calm_cities_customers_are_never_loaded(tmp_path: Path, openmeteo: FakeOpenMeteo) -> None:
    rt = _open_meteo_runtime(f"sqlite:///{tmp_path / 'c.db'}", openmeteo)
    try:
        _add(rt, "sh", "Shanghai")
        for i in range(4):
            _add(rt, f"bj{i}", "Beijing")
        openmeteo.set_day(SHANGHAI, DAY, weather_code=96)
        with loaded_customers() as seen:
            plan(rt, now=NOW)
        assert seen == ["sh"]
    finally:
        rt.close()


def test_alerts_follow_the_customers_local_day(tmp_path: Path) -> None:
    # 2026-12-31 12:00 UTC: Jan 1 in Auckland, Dec 31 in London. The alert is for Jan 1 only.
    path = _alert_file(tmp_path, [{"id": "NY", "city": "Mixed", "kind": "snow", "starts": "2027-01-01"}])
    rt = runtime_with(
        f"sqlite:///{tmp_path / 'c.db'}", {"weather": {"provider": "file", "alerts_file": str(path)}}
    )
    try:
        _add(rt, "auckland", "Mixed", timezone="Pacific/Auckland")
        _add(rt, "london", "Mixed", timezone="Europe/London")
        plan(rt, now=parse_instant("2026-12-31T12:00:00+00:00"))
        assert recipients(rt, "weather") == ["auckland"]
    finally:
        rt.close()


def test_settings_checked_at_start_up(careflow_db_url: str) -> None:
    with pytest.raises(ConfigError, match=r"plugins.weather.*alerts_file"):
        runtime_with(careflow_db_url, {"weather": {"provider": "file"}})
    with pytest.raises(ConfigError, match=r"plugins.weather.*cities.*latitude"):
        runtime_with(careflow_db_url, {"weather": {"cities": {"Shanghai": [121.47, 31.23]}}})


def test_file_provider_directly(tmp_path: Path) -> None:
    path = _alert_file(
        tmp_path,
        [{"id": "X", "city": "Shanghai", "kind": "hail", "starts": "2026-07-19", "ends": "2026-07-20"}],
    )
    settings: PluginSettings = WeatherSettings(provider="file", alerts_file=path)
    provider = AlertFileProvider()
    assert [a["id"] for a in provider.alerts("Shanghai", DAY, settings)] == ["X"]
    assert provider.alerts("Shanghai", date(2026, 7, 21), settings) == []
    assert provider.alerts("Beijing", DAY, settings) == []


# --- A warning issued during the day (issue 13, item 7) ---


def test_a_warning_issued_during_the_day_reaches_the_city_that_day(
    db_url: str, openmeteo: FakeOpenMeteo
) -> None:
    rt = _open_meteo_runtime(db_url, openmeteo)
    try:
        _add(rt, "sh", "Shanghai")
        _add(rt, "bj", "Beijing")
        assert plan(rt, now=NOW).new == 0  # 08:00: calm everywhere
        openmeteo.set_day(SHANGHAI, DAY, precipitation_sum=90.0)  # the forecast turns at noon
        afternoon = plan(rt, now=parse_instant("2026-07-20T14:00:00+08:00"))
        assert afternoon.new == 1 and recipients(rt, "weather") == ["sh"]
        (event,) = events(rt, "weather")
        assert event.period == "open-meteo/Shanghai/rainstorm/2026-07-20"  # keyed by the alert's id
        # Asked again an hour later, the same storm is the same alert: never sent twice.
        again = plan(rt, now=parse_instant("2026-07-20T15:05:00+08:00"))
        assert again.new == 0 and again.already_recorded == 1
        assert openmeteo.requests_for(SHANGHAI) == 3 and len(events(rt, "weather")) == 1
    finally:
        rt.close()


def test_the_bureau_file_is_read_again_during_the_day(tmp_path: Path) -> None:
    path = _alert_file(tmp_path, [{"id": "SH-1", "city": "Shanghai", "kind": "heat", "starts": "2026-07-20"}])
    rt = runtime_with(
        f"sqlite:///{tmp_path / 'c.db'}",
        {"weather": {"provider": "file", "alerts_file": str(path)}},
    )
    try:
        _add(rt, "sh", "Shanghai")
        plan(rt, now=NOW)
        rows = [
            {"id": "SH-1", "city": "Shanghai", "kind": "heat", "starts": "2026-07-20"},
            {"id": "SH-2", "city": "上海市", "kind": "hail", "starts": "2026-07-20"},  # issued at 11:00
        ]
        _alert_file(tmp_path, rows)
        plan(rt, now=parse_instant("2026-07-20T08:50:00+08:00"))  # within the hour: not read again
        assert [e.period for e in events(rt, "weather")] == ["SH-1"]
        plan(rt, now=parse_instant("2026-07-20T11:15:00+08:00"))
        plan(rt, now=parse_instant("2026-07-20T11:35:00+08:00"))  # read at 11:15: nothing new
        assert [e.period for e in events(rt, "weather")] == ["SH-1", "SH-2"]
    finally:
        rt.close()


def test_the_refresh_interval_is_configurable(tmp_path: Path, openmeteo: FakeOpenMeteo) -> None:
    rt = _open_meteo_runtime(f"sqlite:///{tmp_path / 'c.db'}", openmeteo, refresh_minutes=15)
    try:
        _add(rt, "sh", "Shanghai")
        for minute in ("00", "10", "14", "15", "20"):
            plan(rt, now=parse_instant(f"2026-07-20T08:{minute}:00+08:00"))
        assert openmeteo.requests_for(SHANGHAI) == 2  # at 08:00 and 08:15
    finally:
        rt.close()


def test_processes_asking_at_once_make_one_provider_call_per_city(
    pg_url: str, openmeteo: FakeOpenMeteo
) -> None:
    rt = _open_meteo_runtime(pg_url, openmeteo, cities={"上海": list(SHANGHAI)})
    try:
        _add(rt, "sh", "上海")
        with rt.sessions.begin() as session:  # today's segments, so the runs below share only weather
            refresh_segments(session, rt.settings.segments, now=NOW)
        openmeteo.delay_seconds = 0.5  # a slow provider: the others arrive while the first asks
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: plan(rt, now=NOW), range(4)))  # never asked before: first one wins
        assert openmeteo.requests_for(SHANGHAI) == 1
        openmeteo.set_day(SHANGHAI, DAY, precipitation_sum=90.0)
        later = NOW + timedelta(minutes=90)  # due for a refresh: again one of them asks
        with ThreadPoolExecutor(4) as pool:
            reports = list(pool.map(lambda _: plan(rt, now=later), range(4)))
        assert openmeteo.requests_for(SHANGHAI) == 2
        assert sum(r.new for r in reports) == 1 and recipients(rt, "weather") == ["sh"]
    finally:
        rt.close()


def test_a_claim_left_by_a_dead_process_is_taken_over(tmp_path: Path, openmeteo: FakeOpenMeteo) -> None:
    rt = _open_meteo_runtime(f"sqlite:///{tmp_path / 'c.db'}", openmeteo)
    try:
        _add(rt, "sh", "Shanghai")
        openmeteo.set_day(SHANGHAI, DAY, precipitation_sum=90.0)
        with rt.sessions.begin() as session:  # a process claimed Shanghai at 08:00 and died
            session.add(
                WeatherReport(provider="open-meteo", city="上海", day=DAY, alerts=[], claimed_until=NOW)
            )
        plan(rt, now=NOW - timedelta(seconds=30))
        assert openmeteo.requests == []  # still claimed: nobody else asks meanwhile
        plan(rt, now=NOW)
        assert openmeteo.requests_for(SHANGHAI) == 1 and recipients(rt, "weather") == ["sh"]
    finally:
        rt.close()


def test_the_scheduler_plans_weather_again_during_the_day(tmp_path: Path, openmeteo: FakeOpenMeteo) -> None:
    rt = runtime_with(
        f"sqlite:///{tmp_path / 'c.db'}",
        {
            "weather": {"open_meteo_url": openmeteo.url, "cities": CITIES},  # refresh_minutes: 60
            "birthday": {},
        },
    )
    try:
        _add(rt, "sh", "Shanghai")
        _add(rt, "bd", None, birthday=(1990, 7, 20))
        queued: list[int] = []
        service = SchedulerService(rt, holder="a", enqueue=queued.extend)
        assert service.tick(NOW)  # 08:00: the day is planned (a birthday; calm weather)
        assert recipients(rt, "birthday") == ["bd"] and events(rt, "weather") == []
        openmeteo.set_day(SHANGHAI, DAY, hail=True, weather_code=96)  # a hail warning at 14:00
        with loaded_customers() as seen:
            service.tick(parse_instant("2026-07-20T14:00:00+08:00"))
            service.tick(parse_instant("2026-07-20T14:40:00+08:00"))  # within the hour: nothing
        assert recipients(rt, "weather") == ["sh"] and seen == ["sh"]  # the birthday day not planned again
        (event,) = events(rt, "weather")
        assert event.id in queued and openmeteo.requests_for(SHANGHAI) == 2
    finally:
        rt.close()


# --- City names in any spelling (issue 13, item 9) ---


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("深圳", "深圳"),
        ("深圳市", "深圳"),
        ("Shenzhen", "深圳"),
        (" shenzhen  city ", "深圳"),
        ("SHENZHEN", "深圳"),
        ("Ｓｈｅｎｚｈｅｎ", "深圳"),  # full-width, as some Chinese keyboards type it
        ("Shēnzhèn", "深圳"),
        ("Xi'an", "西安"),
        ("xian", "西安"),
        ("Hong Kong", "香港"),
        ("Ürümqi", "乌鲁木齐"),
        ("Lvliang", "吕梁"),
        ("昆山市", "昆山"),
        ("Suzhou", "Suzhou"),  # 苏州 or 宿州: left as written, never guessed
        ("los  angeles", "Los Angeles"),
        ("Mexico City", "Mexico City"),
    ],
)
def test_city_names_are_made_canonical(written: str, canonical: str) -> None:
    assert canonical_city(written) == canonical


CAPITALS = {
    "Beijing": "北京", "Tianjin": "天津", "Shanghai": "上海", "Chongqing": "重庆",
    "Shijiazhuang": "石家庄", "Taiyuan": "太原", "Hohhot": "呼和浩特", "Shenyang": "沈阳",
    "Changchun": "长春", "Harbin": "哈尔滨", "Nanjing": "南京", "Hangzhou": "杭州", "Hefei": "合肥",
    "Nanchang": "南昌", "Jinan": "济南", "Zhengzhou": "郑州", "Wuhan": "武汉", "Changsha": "长沙",
    "Guangzhou": "广州", "Nanning": "南宁", "Haikou": "海口", "Chengdu": "成都", "Guiyang": "贵阳",
    "Kunming": "昆明", "Lhasa": "拉萨", "Xi'an": "西安", "Lanzhou": "兰州", "Xining": "西宁",
    "Yinchuan": "银川", "Urumqi": "乌鲁木齐", "Hong Kong": "香港", "Macau": "澳门",
}  # fmt: skip


def test_every_provincial_capital_and_municipality_is_known() -> None:
    for name, chinese in CAPITALS.items():
        assert (canonical_city(name), canonical_city(f"{chinese}市")) == (chinese, chinese), name
    # Fuzhou (福建) shares its pinyin with 抚州 (江西): the Chinese name is needed.
    assert canonical_city("福州") == "福州" and canonical_city("Fuzhou") == "Fuzhou"
    assert {(c.chinese, c.province) for c in ambiguity("Fuzhou")} == {("福州", "福建"), ("抚州", "江西")}


def test_a_chinese_card_gets_the_alert_for_its_city_in_any_spelling(tmp_path: Path) -> None:
    path = _alert_file(
        tmp_path, [{"id": "SZ-1", "city": "Shenzhen", "kind": "typhoon", "starts": "2026-07-20"}]
    )
    rt = runtime_with(
        f"sqlite:///{tmp_path / 'c.db'}", {"weather": {"provider": "file", "alerts_file": str(path)}}
    )
    try:
        text = (
            "external_id,name,city,locale,phone,sms_consent\n"
            "a,王伟,深圳,zh_CN,13800138001,yes\n"
            "b,李娜,深圳市,zh_CN,13800138002,yes\n"
            "c,Amy,shenzhen ,en,13800138003,yes\n"
            "d,张强,广州,zh_CN,13800138004,yes\n"
        )
        with rt.sessions.begin() as session:
            CustomerImporter(session, center(session)).run_text(text)
        with rt.sessions() as session:
            stored = {ext: city for ext, city in session.execute(select(Customer.external_id, Customer.city))}
        assert stored == {"a": "深圳", "b": "深圳", "c": "深圳", "d": "广州"}  # one form on every card
        run_day(rt, now=NOW)
        assert sorted(recipients(rt, "weather")) == ["a", "b", "c"]
        bodies = {e.locale: e.body or "" for e in events(rt, "weather") if e.status == "sent"}
        assert "深圳自" in bodies["zh_CN"] and "expected in Shenzhen" in bodies["en"]  # each in its language
    finally:
        rt.close()


def test_cards_written_before_match_too(db_url: str, openmeteo: FakeOpenMeteo) -> None:
    rt = _open_meteo_runtime(
        db_url, openmeteo, cities={"深圳市": [22.54, 114.06], "Shanghai": list(SHANGHAI)}
    )
    try:
        for ext, city in (("a", "Shenzhen"), ("b", "深圳 "), ("c", "shenzhen"), ("d", "上海")):
            _add(rt, ext, city)  # stored as written, as by an older careflow or another program
        openmeteo.set_day((22.54, 114.06), DAY, weather_code=96)
        with loaded_customers() as seen:
            plan(rt, now=NOW)
        assert sorted(recipients(rt, "weather")) == ["a", "b", "c"]
        assert sorted(seen) == ["a", "b", "c"]  # still narrowed by city in SQL: 上海 is calm, not loaded
        assert openmeteo.requests_for((22.54, 114.06)) == 1  # one look-up for the three spellings
        with rt.sessions() as session:
            assert set(session.scalars(select(Customer.city))) == {"深圳", "上海"}
    finally:
        rt.close()


def test_the_cities_setting_takes_any_spelling_once(careflow_db_url: str) -> None:
    cfg = WeatherSettings(cities={"Shenzhen": (22.54, 114.06), "深圳市": (22.54, 114.06)})
    assert cfg.cities == {"深圳": (22.54, 114.06)}
    with pytest.raises(ConfigError, match=r"Shenzhen and 深圳 are the same city \(深圳\)"):
        runtime_with(
            careflow_db_url, {"weather": {"cities": {"Shenzhen": [22.5, 114.0], "深圳": [23.0, 113.0]}}}
        )


def test_an_unreadable_city_is_an_import_error(careflow_db_url: str) -> None:
    rt = runtime_with(careflow_db_url, {})
    try:
        text = "external_id,name,city\nok,王伟,Shenzhen\nlong,李娜," + "x" * 120 + "\n"
        with rt.sessions.begin() as session, pytest.raises(ImportDataError) as caught:
            CustomerImporter(session, center(session)).run_text(text)
        assert caught.value.problems == [
            f"row 3, column city: value {'x' * 120!r}: too long; at most 100 characters"
        ]
    finally:
        rt.close()
