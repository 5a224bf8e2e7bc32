"""Run one care day the way ``careflow run`` does, and get back what would have been sent."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select

from careflow.care import CarePlugin
from careflow.hookspecs import hookimpl
from careflow.planning.plan import PlanReport
from careflow.plugin_manager import PluginRegistry, make_plugin_manager, registry_from_manager
from careflow.runtime import Runtime
from careflow.service.care_run import run_day
from careflow.storage.models import CareEvent, Customer, EventStatus
from careflow.testing.capture import CAPTURE_PROVIDER, CapturingProvider


@dataclass(frozen=True)
class SentMessage:
    """One message the channel received, with the care event it came from."""

    plugin: str
    customer: str  # the customer's external id
    channel: str
    to: str
    body: str
    subject: str | None
    key: str  # the idempotency key, plugin:occasion:period:customer
    template: str
    locale: str
    due_date: date
    context: Mapping[str, Any]


class CareRunFailed(AssertionError):
    """A plugin failed, or an event could not be sent, during ``run_care_day``; the message says which."""

    def __init__(self, problems: list[str], report: PlanReport) -> None:
        super().__init__("the care day had problems:\n  " + "\n  ".join(problems))
        self.problems = problems
        self.report = report


class _ProvidesCarePlugins:
    """Hands plugin instances given to ``run_care_day`` to careflow, as an installed package would."""

    def __init__(self, plugins: list[CarePlugin]) -> None:
        self.plugins = plugins

    @hookimpl
    def careflow_care_plugins(self) -> list[CarePlugin]:
        return list(self.plugins)


def run_care_day(
    runtime: Runtime,
    *,
    now: datetime,
    day: date | None = None,
    plugins: Iterable[str | CarePlugin | object] | None = None,
    raise_on_failure: bool = True,
) -> list[SentMessage]:
    """Plan and deliver one day on ``runtime``'s database; return the messages, oldest event first.

    Every configured channel goes to an in-memory capturing provider and the broker is the
    in-process one, so nothing leaves the test. ``plugins`` (names of installed care plugins,
    ``CarePlugin`` instances, or other pluggy plugin objects) are the only care plugins
    enabled for this run; by default the runtime's configuration decides. Outbox rows are
    written as in a real run, so a second call for the same day sends nothing new.
    A plugin failure or an event that failed to send raises ``CareRunFailed``.
    """
    capture = CapturingProvider()
    names, objects = _split(plugins or [])
    registry = _registry(runtime.registry, [*objects, capture])
    data = runtime.settings.model_dump()
    data["broker"]["url"] = "local"
    data["channels"] = {channel: {"provider": CAPTURE_PROVIDER} for channel in data["channels"]}
    if plugins is not None:
        chosen = names | {p.name for p in objects if isinstance(p, CarePlugin)}
        chosen |= {p.name for o in objects if isinstance(o, _ProvidesCarePlugins) for p in o.plugins}
        missing = sorted(chosen - set(registry.care_plugins))
        if missing:
            installed = ", ".join(sorted(registry.care_plugins))
            raise LookupError(f"care plugin(s) {', '.join(missing)} not found; installed: {installed}")
        for name in registry.care_plugins:
            data["plugins"].setdefault(name, {})["enabled"] = name in chosen
    day_runtime = Runtime.build(type(runtime.settings).model_validate(data), registry=registry)
    try:
        result = run_day(day_runtime, now=now, day=day)
        return _sent(day_runtime, capture, result.report, raise_on_failure)
    finally:
        day_runtime.close()


def _split(plugins: Iterable[str | CarePlugin | object]) -> tuple[set[str], list[object]]:
    names: set[str] = set()
    care: list[CarePlugin] = []
    others: list[object] = []
    for item in plugins:
        if isinstance(item, str):
            names.add(item)
        elif isinstance(item, CarePlugin):
            care.append(item)
        else:
            others.append(item)
    return names, [*others, *([_ProvidesCarePlugins(care)] if care else [])]


def _registry(base: PluginRegistry, extra: list[object]) -> PluginRegistry:
    """The runtime's plugins (same objects, same names) plus ``extra``."""
    pm = make_plugin_manager()
    for name, plugin in base.pm.list_name_plugin():
        if plugin is not None:
            pm.register(plugin, name=name)
    for plugin in extra:
        pm.register(plugin)
    return registry_from_manager(pm)


def _sent(
    runtime: Runtime, capture: CapturingProvider, report: PlanReport, strict: bool
) -> list[SentMessage]:
    problems = [
        f"plugin {f.plugin} failed (customers {f.batch[0]}-{f.batch[1]}"
        + (f", customer {f.customer}" if f.customer else "")
        + f"): {f.error}"
        for f in report.failures
    ]
    by_event = {m.event_id: m for m in capture.messages}
    sent: list[tuple[int, SentMessage]] = []
    with runtime.sessions() as session:
        keys = report.keys
        for start in range(0, len(keys), 1_000):
            rows = session.execute(
                select(CareEvent, Customer.external_id)
                .join(Customer, Customer.id == CareEvent.customer_id)
                .where(CareEvent.idempotency_key.in_(keys[start : start + 1_000]))
                .order_by(CareEvent.id)
            )
            for event, external_id in rows:
                if event.status == EventStatus.FAILED:
                    problems.append(f"event {event.idempotency_key} failed: {event.status_reason}")
                message = by_event.get(event.id)
                if message is None:
                    continue
                sent.append(
                    (
                        event.id,
                        SentMessage(
                            plugin=event.plugin,
                            customer=external_id,
                            channel=message.channel,
                            to=message.to,
                            body=message.body,
                            subject=message.subject,
                            key=event.idempotency_key,
                            template=event.template,
                            locale=event.locale,
                            due_date=event.due_date,
                            context=dict(event.context),
                        ),
                    )
                )
    if problems and strict:
        raise CareRunFailed(problems, report)
    return [message for _, message in sorted(sent, key=lambda pair: pair[0])]
