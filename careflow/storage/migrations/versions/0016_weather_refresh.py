"""weather_reports: asked again during the day; a claim so one process asks per city and interval

Revision ID: 0016_weather_refresh
Revises: 0015_center_country
Create Date: 2026-12-06 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_weather_refresh"
down_revision: str | None = "0015_center_country"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("weather_reports") as batch:
        # NULL until the first answer: the row is created by the claim, before the provider is asked.
        batch.alter_column("fetched_at", existing_type=sa.DateTime(timezone=True), nullable=True)
        batch.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.execute("DELETE FROM weather_reports WHERE fetched_at IS NULL")
    with op.batch_alter_table("weather_reports") as batch:
        batch.drop_column("claimed_until")
        batch.alter_column("fetched_at", existing_type=sa.DateTime(timezone=True), nullable=False)
