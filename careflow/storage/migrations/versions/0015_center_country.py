"""centers: the country phone numbers written without + are read in

Revision ID: 0015_center_country
Revises: 0014_voucher_issuing_visit
Create Date: 2026-12-05 01:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_center_country"
down_revision: str | None = "0014_voucher_issuing_visit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("centers") as batch:
        batch.add_column(sa.Column("country", sa.String(length=2), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("centers") as batch:
        batch.drop_column("country")
