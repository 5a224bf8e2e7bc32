"""Center operations: dashboard, plugin settings, customers and imports, events and retries, dry run."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import or_, select
from starlette.datastructures import UploadFile
from starlette.responses import Response

from careflow.config import CHANNEL_NAMES
from careflow.customers.import_customers import CUSTOMER_COLUMNS, CustomerImporter
from careflow.delivery.actors import build_actors
from careflow.delivery.broker import LOCAL, make_broker
from careflow.errors import ImportDataError, TemplateError
from careflow.planning.center_settings import center_settings, load_overrides
from careflow.planning.plan import plan
from careflow.policies.consent import (
    ALL_PURPOSES,
    CUSTOMER_REQUEST,
    RE_CONSENT,
    ConsentRefused,
    history,
    record_consent,
)
from careflow.rendering.event import render_event
from careflow.service.care_run import retry_events
from careflow.storage.models import (
    CareEvent,
    CenterPluginSetting,
    Consent,
    Customer,
    EventStatus,
    ServiceVisit,
    Vehicle,
)
from careflow.web.console import reports
from careflow.web.console.app import Ctx, NotFound, guarded
from careflow.web.console.charts import line_chart, stacked_bars
from careflow.web.console.plugin_forms import form_fields, validation_problems, values_from_form
from careflow.web.console.security import Perm

DASHBOARD_DAYS = 14
# The largest CSV the console takes (about 300,000 customers); larger files: `careflow import customers`.
IMPORT_UPLOAD_BYTES = 50 * 1024 * 1024


def _center_today(ctx: Ctx) -> date:
    return ctx.console.clock().astimezone(ZoneInfo(ctx.center.timezone)).date()


@guarded(Perm.VIEW_REPORTS)
def dashboard(ctx: Ctx) -> Response:
    last = _center_today(ctx)
    first = last - timedelta(days=DASHBOARD_DAYS - 1)
    days = reports.days_between(first, last)
    counts = reports.daily_counts(ctx.db, ctx.center.id, first, last)
    opt_outs = reports.opt_outs(ctx.db, ctx.center.id, first, last)
    overall = {
        status: [sum(counts[p][status].get(d, 0) for p in counts) for d in days]
        for status in reports.DASHBOARD_STATUSES
    }
    overall["opt_outs"] = [opt_outs.get(d, 0) for d in days]
    charts = {"": stacked_bars(ctx.t("Events per day and status"), days, overall)}
    for plugin in sorted(counts):
        series = {s: [counts[plugin][s].get(d, 0) for d in days] for s in reports.DASHBOARD_STATUSES}
        charts[plugin] = stacked_bars(f"{plugin}: {ctx.t('Events per day and status')}", days, series)
    scores = reports.survey_scores(ctx.db, ctx.center.id, first, last)
    score_chart = line_chart(ctx.t("Average survey score"), scores, lo=0, hi=10) if scores else None
    rows = [
        (day, plugin, [counts[plugin][s].get(day, 0) for s in reports.DASHBOARD_STATUSES])
        for day in reversed(days)
        for plugin in sorted(counts)
        if any(counts[plugin][s].get(day, 0) for s in reports.DASHBOARD_STATUSES)
    ]
    return ctx.render(
        "dashboard.html",
        charts=charts,
        score_chart=score_chart,
        rows=rows,
        statuses=reports.DASHBOARD_STATUSES,
        opt_outs=opt_outs,
        first=first,
        last=last,
    )


def _plugin_state(ctx: Ctx) -> list[dict[str, Any]]:
    overrides = load_overrides(ctx.db)
    state = []
    for name, plugin in sorted(ctx.runtime.registry.care_plugins.items(), key=lambda kv: -kv[1].priority):
        configured = ctx.runtime.settings.plugins.get(name, {})
        override = overrides.get((ctx.center.id, name))
        try:
            settings = center_settings(plugin, configured, override)
        except ValidationError:
            settings = center_settings(plugin, configured, None)
        state.append({"name": name, "plugin": plugin, "settings": settings, "override": override})
    return state


@guarded(Perm.EDIT_PLUGINS)
def plugin_list(ctx: Ctx) -> Response:
    if ctx.param("saved"):
        ctx.notices.append(ctx.t("Saved."))
    return ctx.render("plugins.html", plugins=_plugin_state(ctx))


def _store_override(ctx: Ctx, name: str, values: dict[str, Any]) -> None:
    row = ctx.db.scalar(
        select(CenterPluginSetting).where(
            CenterPluginSetting.center_id == ctx.center.id, CenterPluginSetting.plugin == name
        )
    )
    if row is None:
        ctx.db.add(
            CenterPluginSetting(
                center_id=ctx.center.id, plugin=name, settings=values, updated_by=ctx.user.email
            )
        )
    else:
        row.settings, row.updated_by = dict(values), ctx.user.email


@guarded(Perm.EDIT_PLUGINS)
def plugin_toggle(ctx: Ctx) -> Response:
    name = ctx.request.path_params["name"]
    plugin = ctx.runtime.registry.care_plugins.get(name)
    if plugin is None:
        raise NotFound(name)
    current = load_overrides(ctx.db).get((ctx.center.id, name), {})
    values = {**current, "enabled": ctx.param("enabled") == "on"}
    center_settings(plugin, ctx.runtime.settings.plugins.get(name, {}), values)  # the schema accepts it
    _store_override(ctx, name, values)
    return ctx.redirect("/plugins?saved=1")


@guarded(Perm.EDIT_PLUGINS)
def plugin_settings(ctx: Ctx) -> Response:
    name = ctx.request.path_params["name"]
    plugin = ctx.runtime.registry.care_plugins.get(name)
    if plugin is None:
        raise NotFound(name)
    configured = ctx.runtime.settings.plugins.get(name, {})
    override = load_overrides(ctx.db).get((ctx.center.id, name), {})
    current = center_settings(plugin, configured, override).model_dump(mode="json")
    fields = form_fields(plugin.settings_model, current)
    problems: dict[str, str] = {}
    status = 200
    if ctx.form is not None:
        submitted = {k: v for k, v in ctx.form.items() if isinstance(v, str)}
        values, problems = values_from_form(fields, submitted)
        if not problems:
            try:
                center_settings(plugin, configured, values)
            except ValidationError as exc:
                problems = validation_problems(exc)
        if not problems:
            _store_override(ctx, name, values)
            return ctx.redirect(f"/plugins/{name}?saved=1")
        fields = form_fields(plugin.settings_model, {**current, **values})
        ctx.notices.append(ctx.t("Please correct the highlighted fields."))
        status = 422
    elif ctx.param("saved"):
        ctx.notices.append(ctx.t("Saved."))
    return ctx.render(
        "plugin_settings.html",
        status,
        name=name,
        plugin=plugin,
        fields=fields,
        problems=problems,
        override=override,
    )


@guarded(Perm.VIEW_CUSTOMERS)
def customer_list(ctx: Ctx) -> Response:
    q = ctx.param("q").strip()
    query = select(Customer).where(Customer.center_id == ctx.center.id)
    if q:
        like = f"%{q}%"
        query = query.where(
            or_(Customer.name.ilike(like), Customer.phone.ilike(like), Customer.external_id.ilike(like))
        )
    customers = list(ctx.db.scalars(query.order_by(Customer.name).limit(100)))
    return ctx.render("customers.html", customers=customers, q=q, columns=CUSTOMER_COLUMNS)


def _card_customer(ctx: Ctx) -> Customer:
    raw = ctx.request.path_params["customer_id"]
    customer = ctx.db.get(Customer, int(raw)) if raw.isdigit() else None
    if customer is None:
        raise NotFound(raw)
    ctx.check_center(customer.center_id)
    return customer


@guarded(Perm.VIEW_CUSTOMERS)
def customer_card(ctx: Ctx) -> Response:
    return _render_card(ctx, _card_customer(ctx))


def _render_card(
    ctx: Ctx, customer: Customer, status: int = 200, consent_problem: str | None = None
) -> Response:
    vehicles = list(
        ctx.db.scalars(select(Vehicle).where(Vehicle.customer_id == customer.id).order_by(Vehicle.plate))
    )
    visits = list(
        ctx.db.scalars(
            select(ServiceVisit)
            .where(ServiceVisit.customer_id == customer.id)
            .order_by(ServiceVisit.date.desc())
        )
    )
    consents = list(
        ctx.db.scalars(
            select(Consent)
            .where(Consent.customer_id == customer.id)
            .order_by(Consent.channel, Consent.purpose)
        )
    )
    events = list(
        ctx.db.scalars(
            select(CareEvent)
            .where(CareEvent.customer_id == customer.id)
            .order_by(CareEvent.id.desc())
            .limit(200)
        )
    )
    extras = reports.customer_extras(ctx.db, customer.id, today=_center_today(ctx))
    zone = ZoneInfo(customer.timezone or ctx.center.timezone)
    return ctx.render(
        "customer_card.html",
        status,
        customer=customer,
        vehicles=vehicles,
        visits=visits,
        consents=consents,
        consent_history=[
            (change, change.effective_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"))
            for change in history(ctx.db, customer.id)
        ],
        may_record_consent=ctx.user.can(Perm.RECORD_CONSENT),
        consent_problem=consent_problem,
        channels=sorted(CHANNEL_NAMES),
        today=ctx.console.clock().astimezone(zone).date().isoformat(),
        events=events,
        extras=extras,
    )


@guarded(Perm.RECORD_CONSENT)
def customer_consent(ctx: Ctx) -> Response:
    """Record what the customer said in person: a dated, evidenced re-consent, or a request to stop.

    Nothing else in the console can give consent back once the customer withdrew it.
    """
    customer = _card_customer(ctx)
    channel, purpose, action = ctx.param("channel"), ctx.param("purpose", "all"), ctx.param("action")
    evidence = ctx.param("evidence").strip()
    problem = None
    if channel not in CHANNEL_NAMES or action not in ("grant", "withdraw"):
        problem = ctx.t("Choose a channel and whether the customer gave or withdrew consent.")
    purposes = list(ALL_PURPOSES) if purpose == "all" else [p for p in ALL_PURPOSES if str(p) == purpose]
    zone = ZoneInfo(customer.timezone or ctx.center.timezone)
    given_at = ctx.console.clock()
    if action == "grant" and problem is None:
        try:
            day = date.fromisoformat(ctx.param("date"))
            moment = time.fromisoformat(ctx.param("time")) if ctx.param("time") else None
        except ValueError:
            problem = ctx.t("Give the date (and time, if known) the customer gave consent.")
        else:
            local_now = given_at.astimezone(zone)
            if moment is not None:
                given_at = datetime.combine(day, moment, tzinfo=zone)
            elif day != local_now.date():
                given_at = datetime.combine(day, time(0), tzinfo=zone)
    if problem is None and purposes:
        try:
            record_consent(
                ctx.db,
                customer.id,
                channel,
                purposes,
                granted=action == "grant",
                source=RE_CONSENT if action == "grant" else CUSTOMER_REQUEST,
                actor=ctx.user.email,
                note=evidence or None,
                effective_at=given_at,
            )
        except ConsentRefused as exc:
            problem = str(exc)
        else:
            ctx.db.commit()
            return ctx.redirect(f"/customers/{customer.id}#consent-history")
    ctx.db.rollback()
    return _render_card(ctx, customer, 422, problem or ctx.t("Choose a purpose."))


@guarded(Perm.IMPORT_CUSTOMERS, max_body=IMPORT_UPLOAD_BYTES)
def customer_import(ctx: Ctx) -> Response:
    result: dict[str, Any] | None = None
    status = 200
    if ctx.form is not None:
        upload = ctx.form.get("file")
        skip_invalid = ctx.param("skip_invalid") == "on"
        if not isinstance(upload, UploadFile) or not upload.filename:
            result = {"problems": [ctx.t("Choose a file to import.")], "imported": False}
            status = 400
        else:
            # The same reader as `careflow import customers`: the encoding detected, and said.
            importer = CustomerImporter(ctx.db, ctx.center, skip_invalid=skip_invalid)
            try:
                report = importer.run_bytes(upload.file.read(), upload.filename)
            except ImportDataError as exc:
                ctx.db.rollback()
                result = {"problems": exc.problems, "imported": False}
                status = 422
            else:
                result = {
                    "problems": report.problems,
                    "imported": True,
                    "read_as": report.read_as,
                    "created": report.created,
                    "updated": report.updated,
                    "unchanged": report.unchanged,
                    "skipped": report.skipped_rows,
                }
    return ctx.render(
        "customer_import.html",
        status,
        result=result,
        columns=CUSTOMER_COLUMNS,
        max_mb=IMPORT_UPLOAD_BYTES // 2**20,
    )


def _event_filters(ctx: Ctx) -> dict[str, str]:
    return {"day": ctx.param("day"), "plugin": ctx.param("plugin"), "status": ctx.param("status")}


@guarded(Perm.VIEW_REPORTS)
def event_list(ctx: Ctx) -> Response:
    filters = _event_filters(ctx)
    query = (
        select(CareEvent, Customer)
        .join(Customer, Customer.id == CareEvent.customer_id)
        .where(CareEvent.center_id == ctx.center.id)
    )
    if filters["day"]:
        try:
            query = query.where(CareEvent.due_date == date.fromisoformat(filters["day"]))
        except ValueError:
            ctx.notices.append(f"{filters['day']!r}: expected a date like 2026-05-11")
    if filters["plugin"]:
        query = query.where(CareEvent.plugin == filters["plugin"])
    if filters["status"]:
        query = query.where(CareEvent.status == filters["status"])
    rows = ctx.db.execute(query.order_by(CareEvent.id.desc()).limit(300)).all()
    if ctx.param("retried"):
        ctx.notices.append(ctx.param("retried"))
    return ctx.render(
        "events.html",
        rows=rows,
        filters=filters,
        statuses=[s.value for s in EventStatus],
        plugins=sorted(ctx.runtime.registry.care_plugins),
    )


@guarded(Perm.RETRY_EVENTS)
def event_retry(ctx: Ctx) -> Response:
    assert ctx.form is not None
    wanted = [int(v) for v in ctx.form.getlist("event_id") if isinstance(v, str) and v.isdigit()]
    # Only this center's failed events, whatever ids the form carried.
    ids = list(
        ctx.db.scalars(
            select(CareEvent.id).where(
                CareEvent.id.in_(wanted),
                CareEvent.center_id == ctx.center.id,
                CareEvent.status == EventStatus.FAILED,
            )
        )
    )
    ctx.db.commit()  # release the read transaction before retry_events writes on its own
    retried = retry_events(ctx.runtime, ids, now=ctx.console.clock())
    url = ctx.runtime.settings.broker.url
    count = len(retried.planned)
    if url == LOCAL or count == 0:
        message = f"{count} {ctx.t('events marked planned; the next care run sends them.')}"
    else:
        broker = make_broker(url)
        try:
            build_actors(broker, ctx.runtime).enqueue_deliveries(retried.planned)
        finally:
            broker.close()
        message = f"{count} {ctx.t('events queued for delivery.')}"
    if retried.deferred:
        message += f" {len(retried.deferred)} {ctx.t('deferred to the sending window (quiet hours).')}"
    if retried.suppressed:
        message += f" {len(retried.suppressed)} {ctx.t('suppressed by the frequency cap.')}"
    if retried.expired:
        message += f" {len(retried.expired)} {ctx.t('expired.')}"
    return ctx.redirect(f"/events?status=failed&retried={quote(message)}")


@guarded(Perm.VIEW_REPORTS)
def dry_run(ctx: Ctx) -> Response:
    tomorrow = _center_today(ctx) + timedelta(days=1)
    ctx.db.commit()  # planning opens sessions of its own
    report = plan(ctx.runtime, now=ctx.console.clock(), day=tomorrow, dry_run=True)
    rows = []
    for row in report.preview:
        if row.center_id != ctx.center.id:
            continue
        customer = ctx.db.get(Customer, row.customer_id)
        assert customer is not None
        event = CareEvent(**row.as_columns())
        body, status, reason = None, str(row.status), row.status_reason
        if event.channel:
            try:
                body, _ = render_event(ctx.runtime, event, customer, ctx.center)
            except TemplateError as exc:
                status, reason = "failed", str(exc)
        rows.append({"row": row, "customer": customer, "body": body, "status": status, "reason": reason})
    return ctx.render("dry_run.html", rows=rows, day=tomorrow, failures=list(report.failures))
