"""Small care plugins for policy tests: each yields one occasion per customer on planning."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import select

from careflow.care import CarePlugin, Occasion, PlanContext, Purpose
from careflow.hookspecs import hookimpl
from careflow.storage.models import Customer


class EveryoneToday(CarePlugin):
    """Due for every customer on the planned day; ``valid_for`` sets Occasion.expires_at."""

    purpose = Purpose.SERVICE
    variables: ClassVar[Mapping[str, str]] = {"note": "a note"}
    samples: ClassVar[Mapping[str, Any]] = {"note": "注意安全"}

    def __init__(self, name: str, priority: int, valid_for: timedelta | None = None) -> None:
        self.name = name  # type: ignore[misc]
        self.priority = priority  # type: ignore[misc]
        self.valid_for = valid_for

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        for customer in ctx.session.scalars(select(Customer).where(ctx.in_batch())):
            today = ctx.local_today(customer)
            expires: datetime | None = ctx.now + self.valid_for if self.valid_for is not None else None
            yield Occasion(
                customer=customer,
                key=self.name,
                period=today.isoformat(),
                due_date=today,
                context={"note": f"{self.name} note"},
                template="notice",
                expires_at=expires,
            )


class ExtraCarePlugins:
    """Registers the given care plugins and a template directory with a 'notice' template."""

    def __init__(self, template_dir: Path, *plugins: CarePlugin) -> None:
        self.plugins = list(plugins)
        self.template_dir = template_dir
        notice = template_dir / "notice"
        notice.mkdir(parents=True, exist_ok=True)
        (notice / "sms.zh_CN.j2").write_text("【{{ center.name }}】{{ customer.name }}：{{ note }}", "utf-8")
        (notice / "sms.en.j2").write_text("{{ center.name }}: {{ customer.name }}, {{ note }}", "utf-8")

    @hookimpl
    def careflow_care_plugins(self) -> list[CarePlugin]:
        return self.plugins

    @hookimpl
    def careflow_template_dirs(self) -> list[Path]:
        return [self.template_dir]
