"""Satisfaction figures per center and month from ``survey_responses`` (CSAT and an NPS-style score).

On the 5-point scale: CSAT is the share of 4s and 5s; promoters are 5s, passives 4s and
detractors 1-3, and the NPS-style score is promoters% - detractors% (-100 to +100).
A month is the month the reply arrived in the center's own time zone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from careflow.storage.models import Center, SurveyResponse


@dataclass(frozen=True)
class MonthFigures:
    center: str
    month: str  # YYYY-MM
    responses: int
    average: float
    csat: float  # percent of 4-5
    promoters: int
    passives: int
    detractors: int

    @property
    def nps(self) -> float:
        return 100.0 * (self.promoters - self.detractors) / self.responses


def survey_figures(session: Session, center_code: str | None = None) -> list[MonthFigures]:
    """Figures per center and month, oldest month first; streams responses, one row at a time."""
    scores: dict[tuple[str, str], Counter[int]] = {}
    for code, tz, received_at, score in _responses(session, center_code):
        month = received_at.astimezone(ZoneInfo(tz)).strftime("%Y-%m")
        scores.setdefault((code, month), Counter())[score] += 1
    figures = []
    for (code, month), counts in sorted(scores.items()):
        n = sum(counts.values())
        figures.append(
            MonthFigures(
                center=code,
                month=month,
                responses=n,
                average=sum(s * c for s, c in counts.items()) / n,
                csat=100.0 * (counts[4] + counts[5]) / n,
                promoters=counts[5],
                passives=counts[4],
                detractors=counts[1] + counts[2] + counts[3],
            )
        )
    return figures


def _responses(session: Session, center_code: str | None) -> Iterator[tuple[str, str, datetime, int]]:
    query = select(Center.code, Center.timezone, SurveyResponse.received_at, SurveyResponse.score).join(
        Center, Center.id == SurveyResponse.center_id
    )
    if center_code is not None:
        query = query.where(Center.code == center_code)
    for row in session.execute(query.execution_options(yield_per=5_000)):
        yield row.code, row.timezone, row.received_at, row.score
