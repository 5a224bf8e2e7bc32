"""Satisfaction survey: N days after a visit, ask for a 1-5 rating by SMS reply; low scores alert staff.

Staff are reached through an internal *staff card* per center (``Customer.is_staff``,
``external_id = "__staff__"``), kept in step with ``[plugins.survey] staff_phone`` /
``staff_email`` (or ``[plugins.survey.staff.<center>]``) before each run. Follow-ups are
ordinary care events addressed to that card, so consent, channels, templates and the outbox
work for them exactly as for customers; the scheduler never sends anything else to it.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import String, cast, exists, literal, select
from sqlalchemy.orm import Session, aliased

from careflow import (
    CareEvent,
    CarePlugin,
    Center,
    Customer,
    EventStatus,
    FieldProblem,
    InboundReply,
    Occasion,
    PlanContext,
    PluginSettings,
    PrepareContext,
    Purpose,
    ServiceVisit,
    SurveyResponse,
    hookimpl,
    parse_email,
    parse_phone,
    record_consent,
    utcnow,
)

log = logging.getLogger(__name__)

STAFF_EXTERNAL_ID = "__staff__"
NAME = "survey"
PRIORITY = 50  # after weather and maintenance, before points
# A reply is a rating when it is one digit 1-5, optionally with 分/星/stars or "/5" (full-width digits too).
_SCORE = re.compile(r"^\s*([1-5])\s*(?:分|星|颗星|stars?|/\s*5)?\s*[.!。！]*\s*$", re.IGNORECASE)
# How long after the survey a low score still raises a follow-up when planning catches up.
FOLLOWUP_LOOKBACK = timedelta(days=30)


def parse_score(body: str) -> int | None:
    """The 1-5 rating in a reply, or None when the reply is not a rating (ignored, not an error)."""
    match = _SCORE.match(unicodedata.normalize("NFKC", body))
    return int(match.group(1)) if match else None


def _phone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return parse_phone(value, "CN")
    except FieldProblem as exc:
        raise ValueError(str(exc)) from None


def _email(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return parse_email(value)
    except FieldProblem as exc:
        raise ValueError(str(exc)) from None


class StaffContact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone: str | None = None
    email: str | None = None

    @field_validator("phone")
    @classmethod
    def _check_phone(cls, value: str | None) -> str | None:
        return _phone(value)

    @field_validator("email")
    @classmethod
    def _check_email(cls, value: str | None) -> str | None:
        return _email(value)


class SurveySettings(PluginSettings):
    days_after: int = Field(default=1, ge=0, le=60)
    reply_window_days: int = Field(default=7, ge=1, le=60)
    visit_kinds: list[str] | None = None  # None: every kind of visit is surveyed
    followup_max_score: int = Field(default=2, ge=1, le=4)
    staff_phone: str | None = None
    staff_email: str | None = None
    staff: dict[str, StaffContact] = Field(default_factory=dict)  # center code -> its own contact

    @field_validator("staff_phone")
    @classmethod
    def _check_phone(cls, value: str | None) -> str | None:
        return _phone(value)

    @field_validator("staff_email")
    @classmethod
    def _check_email(cls, value: str | None) -> str | None:
        return _email(value)

    def contact_for(self, center_code: str) -> StaffContact:
        return self.staff.get(center_code) or StaffContact(phone=self.staff_phone, email=self.staff_email)


def followup_key(response_id: int, staff_id: int) -> str:
    """The outbox key of a follow-up, the same whether the webhook or the planner records it."""
    return f"{NAME}:followup:response{response_id}:{staff_id}"


def _followup_context(response: SurveyResponse, customer: Customer, visit: ServiceVisit) -> dict[str, Any]:
    return {
        "score": response.score,
        "reply": response.body,
        "rated_customer": {
            "name": customer.name,
            "external_id": customer.external_id,
            "phone": customer.phone,
        },
        "visit_date": visit.date.isoformat(),
        "visit_kind": visit.kind,
    }


class SurveyPlugin(CarePlugin):
    name = NAME
    description = "Asks for a 1-5 rating N days after a visit; a low score alerts the center's staff."
    priority = PRIORITY
    purpose = Purpose.SERVICE
    settings_model = SurveySettings
    targets_staff = True
    bundles = False  # the reply must answer exactly this question
    # Visits of one day (the (date, customer_id) index) and the last 30 days' low scores.
    narrows_in_sql = True
    variables: ClassVar[Mapping[str, str]] = {
        "visit_date": "the date of the visit being rated (ISO; use | date)",
        "visit_kind": "maintenance, repair, inspection or other",
        "reply_by": "the last day a reply is counted (ISO)",
        "score": "survey_followup template only: the rating (1-5)",
        "reply": "survey_followup template only: the customer's reply as written",
        "rated_customer": "survey_followup template only: {name, external_id, phone} of who rated",
    }
    # Realistic values so template lint can trial-render the texts.
    samples: ClassVar[Mapping[str, Any]] = {
        "visit_date": "2026-05-10",
        "visit_kind": "maintenance",
        "reply_by": "2026-05-17",
        "score": 2,
        "reply": "2",
        "rated_customer": {"name": "欧阳文华", "external_id": "C-000123", "phone": "+8613800138000"},
    }

    def prepare(self, ctx: PrepareContext) -> list[str]:
        """Keep each center's staff card in step with the configured contact."""
        cfg = ctx.settings
        assert isinstance(cfg, SurveySettings)
        for center in ctx.session.scalars(select(Center)):
            contact = cfg.contact_for(center.code)
            card = ctx.session.scalars(
                select(Customer).where(
                    Customer.center_id == center.id, Customer.external_id == STAFF_EXTERNAL_ID
                )
            ).first()
            if card is None:
                if not (contact.phone or contact.email):
                    continue
                card = Customer(
                    center_id=center.id, external_id=STAFF_EXTERNAL_ID, name=f"{center.name} staff"
                )
                ctx.session.add(card)
            card.is_staff = True
            card.phone, card.email, card.locale = contact.phone, contact.email, center.locale
            ctx.session.flush()
            for channel in ("sms", "email"):
                record_consent(
                    ctx.session,
                    card.id,
                    channel,
                    [Purpose.SERVICE],
                    granted=True,
                    source="survey staff settings",
                )
        return []

    def occasions(self, ctx: PlanContext) -> Iterable[Occasion]:
        cfg = ctx.settings
        assert isinstance(cfg, SurveySettings)
        yield from self._surveys(ctx, cfg)
        yield from self._followups(ctx, cfg)

    def _surveys(self, ctx: PlanContext, cfg: SurveySettings) -> Iterable[Occasion]:
        lag = timedelta(days=cfg.days_after)
        visit_days = sorted({day - lag for day in ctx.candidate_days()})
        query = (
            select(ServiceVisit, Customer)
            .join(Customer, Customer.id == ServiceVisit.customer_id)
            .where(ctx.in_batch(ServiceVisit.customer_id), ServiceVisit.date.in_(visit_days))
            .where(Customer.is_staff.is_(False))
            .order_by(ServiceVisit.id)
        )
        if cfg.visit_kinds is not None:
            query = query.where(ServiceVisit.kind.in_(cfg.visit_kinds))
        latest: dict[tuple[int, Any], tuple[ServiceVisit, Customer]] = {}
        for visit, customer in ctx.session.execute(query):
            latest[(customer.id, visit.date)] = (visit, customer)  # one survey per customer and day
        for visit, customer in latest.values():
            today = ctx.local_today(customer)
            if visit.date + lag != today:
                continue
            yield Occasion(
                customer=customer,
                key="survey",
                period=f"visit{visit.id}",
                due_date=today,
                context={
                    "visit_id": visit.id,
                    "visit_date": visit.date.isoformat(),
                    "visit_kind": visit.kind,
                    "reply_by": (today + timedelta(days=cfg.reply_window_days)).isoformat(),
                    "followup_max_score": cfg.followup_max_score,
                },
            )

    def _followups(self, ctx: PlanContext, cfg: SurveySettings) -> Iterable[Occasion]:
        """Low scores whose follow-up is not recorded yet (e.g. the staff card came later)."""
        # Follow-ups go to staff cards, a handful in all (a partial index finds them): most
        # batches have none, and then nothing else is read.
        cards = ctx.session.scalars(
            select(Customer.id).where(Customer.is_staff.is_(True), ctx.in_batch())
        ).all()
        if not cards:
            return
        staff = aliased(Customer)
        recorded = exists().where(
            CareEvent.customer_id == staff.id,
            CareEvent.plugin == NAME,
            CareEvent.occasion == "followup",
            CareEvent.period == literal("response") + cast(SurveyResponse.id, String),
        )
        query = (
            select(SurveyResponse, staff, Customer, ServiceVisit)
            .join(staff, (staff.center_id == SurveyResponse.center_id) & staff.is_staff.is_(True))
            .join(Customer, Customer.id == SurveyResponse.customer_id)
            .join(ServiceVisit, ServiceVisit.id == SurveyResponse.visit_id)
            .where(staff.id.in_(cards), SurveyResponse.score <= cfg.followup_max_score)
            .where(SurveyResponse.received_at >= ctx.now - FOLLOWUP_LOOKBACK, ~recorded)
        )
        for response, card, customer, visit in ctx.session.execute(query):
            yield Occasion(
                customer=card,
                key="followup",
                period=f"response{response.id}",
                due_date=ctx.local_today(card),
                context=_followup_context(response, customer, visit),
                template="survey_followup",
            )


def _surveyed_visit(session: Session, customer: Customer, reply: InboundReply) -> CareEvent | None:
    """The latest survey sent to this customer that the reply can still answer."""
    tz = ZoneInfo(customer.timezone or customer.center.timezone)
    local_day = reply.received_at.astimezone(tz).date()
    candidates = session.scalars(
        select(CareEvent)
        .where(
            CareEvent.customer_id == customer.id,
            CareEvent.plugin == NAME,
            CareEvent.occasion == "survey",
            CareEvent.status.in_([EventStatus.SENT, EventStatus.DELIVERED]),
            # Planned days, not send instants: a reply on the survey's own day counts.
            CareEvent.due_date <= local_day,
        )
        .order_by(CareEvent.due_date.desc(), CareEvent.id.desc())
        .limit(1)
    ).first()
    if candidates is None or local_day.isoformat() > str(candidates.context.get("reply_by", "")):
        return None
    return candidates


def record_reply(session: Session, reply: InboundReply) -> SurveyResponse | None:
    """Store a rating reply against the surveyed visit; raise a follow-up for a low score."""
    score = parse_score(reply.body)
    if score is None or reply.customer_id is None:
        return None
    customer = session.get(Customer, reply.customer_id)
    if customer is None:
        return None
    survey = _surveyed_visit(session, customer, reply)
    if survey is None:
        log.info("rating from customer %s matches no open survey; ignored", customer.id)
        return None
    visit_id = int(survey.context["visit_id"])
    response = session.scalars(select(SurveyResponse).where(SurveyResponse.visit_id == visit_id)).first()
    if response is None:
        response = SurveyResponse(center_id=customer.center_id, customer_id=customer.id, visit_id=visit_id)
        session.add(response)
    # A second reply to the same survey corrects the first.
    response.score, response.body = score, reply.body.strip()
    response.received_at, response.provider_message_id = reply.received_at, reply.provider_message_id
    session.flush()
    if score <= int(survey.context.get("followup_max_score", 2)):
        _raise_followup(session, response, customer, reply.received_at)
    return response


def _raise_followup(session: Session, response: SurveyResponse, customer: Customer, now: datetime) -> None:
    """Record the staff follow-up in the outbox now; the next run (or a worker) delivers it."""
    card = session.scalars(
        select(Customer).where(Customer.center_id == response.center_id, Customer.is_staff.is_(True))
    ).first()
    if card is None or not (card.phone or card.email):
        log.warning(
            "low survey score %s but no staff contact configured for center %s",
            response.score,
            customer.center_id,
        )
        return
    key = followup_key(response.id, card.id)
    if session.scalar(select(CareEvent.id).where(CareEvent.idempotency_key == key)) is not None:
        return
    visit = session.get(ServiceVisit, response.visit_id)
    assert visit is not None
    channel, recipient = ("sms", card.phone) if card.phone else ("email", card.email)
    tz = ZoneInfo(card.center.timezone)
    session.add(
        CareEvent(
            idempotency_key=key,
            center_id=card.center_id,
            customer_id=card.id,
            plugin=NAME,
            occasion="followup",
            period=f"response{response.id}",
            purpose=str(Purpose.SERVICE),
            priority=PRIORITY,
            due_date=now.astimezone(tz).date(),
            channel=channel,
            recipient=recipient,
            template="survey_followup",
            locale=card.locale or card.center.locale,
            context=_followup_context(response, customer, visit),
            status=EventStatus.PLANNED,
            created_at=utcnow(),
        )
    )
    session.flush()


@hookimpl(trylast=True)
def careflow_care_plugins() -> list[CarePlugin]:
    return [SurveyPlugin()]


@hookimpl
def careflow_reply_received(session: Session, reply: InboundReply) -> None:
    record_reply(session, reply)
