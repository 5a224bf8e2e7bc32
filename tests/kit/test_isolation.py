"""A plugin that raises, hangs or returns malformed occasions is reported and never stops the run."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from careflow.care import CarePlugin, Occasion, PlanContext
from careflow.cli import main
from careflow.hookspecs import hookimpl
from careflow.planning.plan import plan
from careflow.planning.run_records import last_run
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import CareEvent, Customer, EventStatus, PluginRun
from careflow.testing import FrozenClock, add_customer, build_runtime, make_settings

NOW = "2026-05-11T09:00:00+08:00"


class Provides:
    def __init__(self, *plugins: CarePlugin) -> None:
        self.plugins = plugins

    @hookimpl
    def careflow_care_plugins(self) -> list[CarePlugin]:
        return list(self.plugins)


def _customers(ctx: PlanContext) -> Iterator[Customer]:
    yield from ctx.session.scalars(select(Customer).where(ctx.in_batch()).order_by(Customer.id))


def _occasion(customer: Customer, ctx: PlanContext, **changes: Any) -> Occasion:
    today = ctx.local_today(customer)
    fields: dict[str, Any] = {"customer": customer, "key": "k", "period": str(today), "due_date": today}
    fields.update(changes)
    return Occasion(**fields)


class Raises(CarePlugin):
    name = "raises"

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        for customer in _customers(ctx):
            if customer.external_id == "c2":
                raise RuntimeError("no service history for this car")
            yield _occasion(customer, ctx)


class Hangs(CarePlugin):
    """Hangs on the second customer until the test lets it go (as a stuck HTTP call would)."""

    name = "hangs"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0
        self.finished = threading.Event()

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        self.calls += 1
        try:
            for customer in _customers(ctx):
                if customer.external_id == "c2":
                    self.release.wait(30)
                yield _occasion(customer, ctx)
        finally:
            self.finished.set()


class Malformed(CarePlugin):
    name = "malformed"

    def occasions(self, ctx: PlanContext) -> Iterable[Any]:
        for customer in _customers(ctx):
            yield {
                "c1": _occasion(customer, ctx, key="a:b"),
                "c2": _occasion(customer, ctx, due_date="2026-05-11"),
                "c3": _occasion(customer, ctx, context={"when": date(2026, 5, 11)}),
            }[customer.external_id]
        yield "not an occasion"


class Steady(CarePlugin):
    """A well-behaved plugin: one occasion per customer per day."""

    name = "steady"

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        for customer in _customers(ctx):
            yield _occasion(customer, ctx, template="birthday")


def _runtime(url: str, *plugins: CarePlugin, batch_size: int = 10, budget: float = 30) -> Runtime:
    names = {p.name: {"enabled": True} for p in plugins}
    settings = make_settings(
        url,
        plugins=names,
        scheduler={"batch_size": batch_size, "plugin_time_budget_seconds": budget},
        centers={"main": {"name": "Test Motors", "timezone": "Asia/Shanghai", "locale": "en"}},
    )
    runtime = build_runtime(settings, extra_plugins=[Provides(*plugins)], entry_points=False)
    with runtime.sessions.begin() as session:
        for n in (1, 2, 3):
            add_customer(session, external_id=f"c{n}", phone=f"+861390000000{n}")
    return runtime


def _steady_events(runtime: Runtime) -> dict[str, str]:
    with runtime.sessions() as session:
        rows = session.execute(
            select(Customer.external_id, CareEvent.status)
            .join(Customer, Customer.id == CareEvent.customer_id)
            .where(CareEvent.plugin == "steady")
        )
        return {external_id: status for external_id, status in rows}


def test_a_plugin_that_raises_is_reported_with_the_customer(careflow_db_url: str) -> None:
    runtime = _runtime(careflow_db_url, Raises(), Steady())
    report = plan(runtime, now=FrozenClock(NOW).now)

    [failure] = report.failures
    assert (failure.plugin, failure.customer) == ("raises", "c2")
    assert failure.error == "RuntimeError: no service history for this car"
    assert report.per_plugin["steady"]["planned"] == 3
    assert "raises" not in report.per_plugin  # its batch is dropped whole: no half a batch
    runtime.close()


@pytest.mark.parametrize("batch_size", [1, 10])
def test_a_hung_plugin_is_abandoned_and_the_run_goes_on(db_url: str, batch_size: int) -> None:
    hangs = Hangs()
    runtime = _runtime(db_url, hangs, Steady(), batch_size=batch_size, budget=0.5)
    try:
        result = run_day(runtime, now=FrozenClock(NOW).now)

        [failure] = result.report.failures
        assert (failure.plugin, failure.customer) == ("hangs", "c2")
        assert failure.error.startswith("did not finish within its time budget of 0.5 s (it was at ")
        assert "test_isolation.py" in failure.error and "in occasions)" in failure.error
        assert failure.error.endswith("; abandoned for the rest of this run")
        assert hangs.calls == (2 if batch_size == 1 else 1)  # not asked again after the hang
        # The well-behaved plugin planned and *sent* everything while the hung one held its
        # session open: on SQLite its reader never takes the write lock.
        assert _steady_events(runtime) == {"c1": "sent", "c2": "sent", "c3": "sent"}
    finally:
        hangs.release.set()
        assert hangs.finished.wait(10)
    with runtime.sessions() as session:  # what it produced late was discarded
        recorded = session.scalars(
            select(Customer.external_id)
            .join(CareEvent, CareEvent.customer_id == Customer.id)
            .where(CareEvent.plugin == "hangs")
        )
        # With one customer per batch, c1's batch finished in time; the hung batch left nothing.
        assert list(recorded) == (["c1"] if batch_size == 1 else [])
    runtime.close()


def test_malformed_occasions_are_reported_one_by_one(careflow_db_url: str) -> None:
    runtime = _runtime(careflow_db_url, Malformed(), Steady())
    report = plan(runtime, now=FrozenClock(NOW).now)

    problems = {(f.customer, f.error.split(":")[0]) for f in report.failures if f.plugin == "malformed"}
    assert problems == {
        ("c1", "occasion key 'a"),
        ("c2", "occasion due_date '2026-05-11' must be a date"),
        ("c3", "occasion context is not plain JSON data"),
        (None, "yielded str, not an Occasion"),
    }
    assert report.per_plugin["steady"]["planned"] == 3
    runtime.close()


class Writes(CarePlugin):
    """Keeps a note through ctx.session (as a plugin caching a provider answer might)."""

    name = "writes"

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        for customer in _customers(ctx):
            customer.city = "noted"
            yield _occasion(customer, ctx)


def test_plugin_writes_are_committed_on_success_and_rolled_back_in_a_dry_run(careflow_db_url: str) -> None:
    runtime = _runtime(careflow_db_url, Writes())
    dry = plan(runtime, now=FrozenClock(NOW).now, dry_run=True)
    with runtime.sessions() as session:
        assert set(session.scalars(select(Customer.city))) == {None}
    real = plan(runtime, now=FrozenClock(NOW).now)
    with runtime.sessions() as session:
        assert set(session.scalars(select(Customer.city))) == {"noted"}
    assert dry.new == real.new == 3 and not dry.failures and not real.failures
    runtime.close()


def test_each_run_records_how_every_plugin_fared(careflow_db_url: str) -> None:
    runtime = _runtime(careflow_db_url, Raises(), Steady())
    plan(runtime, now=FrozenClock(NOW).now)
    plan(runtime, now=FrozenClock(NOW).now, dry_run=True)  # a dry run is not recorded

    outcomes = {o.plugin: o for o in last_run(runtime.engine)}
    assert set(outcomes) == {"raises", "steady"}
    assert outcomes["steady"].summary == "ok, 3 occasion(s)"
    assert outcomes["raises"].summary == "FAILED (1 problem(s)), 0 occasion(s)"
    assert outcomes["raises"].failures == [
        {"batch": "1-3", "customer": "c2", "error": "RuntimeError: no service history for this car"}
    ]
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(PluginRun)) == 2
    runtime.close()


def test_careflow_plugins_shows_the_failures_of_the_last_run(
    careflow_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = _runtime(careflow_db_url, Raises(), Steady())
    plan(runtime, now=FrozenClock(NOW).now)
    runtime.close()
    config = tmp_path / "careflow.toml"
    config.write_text(f'[database]\nurl = "{careflow_db_url}"\n', "utf-8")
    monkeypatch.setenv("CAREFLOW_CONFIG", str(config))

    result = CliRunner().invoke(main, ["plugins"], terminal_width=200)

    assert result.exit_code == 0, result.output
    assert (
        "plugin raises failed in the last run (planned for 2026-05-11 01:00 UTC, customers 1-3, "
        "customer c2): RuntimeError: no service history for this car"
    ) in " ".join(result.output.split())


def test_careflow_plugins_before_any_run_creates_no_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAREFLOW_CONFIG", raising=False)
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "failed in the last run" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_pending_and_stale_events_are_untouched_by_a_failed_plugin(careflow_db_url: str) -> None:
    runtime = _runtime(careflow_db_url, Raises(), Steady())
    result = run_day(runtime, now=FrozenClock(NOW).now)
    assert result.report.failures and result.report.new == 3
    with runtime.sessions() as session:
        statuses = set(session.scalars(select(CareEvent.status)))
    assert statuses == {EventStatus.SENT}
    runtime.close()
