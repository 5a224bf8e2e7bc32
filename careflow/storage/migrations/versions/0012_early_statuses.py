"""early statuses: delivery reports that arrive before careflow recorded their message

Revision ID: 0012_early_statuses
Revises: 0011_sign_in_failures
Create Date: 2026-11-23 19:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_early_statuses"
down_revision: str | None = "0011_sign_in_failures"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "early_statuses",
        sa.Column("id", sa.Integer().with_variant(sa.BigInteger(), "postgresql"), nullable=False),
        sa.Column("provider_message_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("error_code", sa.String(length=32), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_early_statuses")),
    )
    for column in ("provider_message_id", "received_at"):
        op.create_index(op.f(f"ix_early_statuses_{column}"), "early_statuses", [column])


def downgrade() -> None:
    for column in ("provider_message_id", "received_at"):
        op.drop_index(op.f(f"ix_early_statuses_{column}"), table_name="early_statuses")
    op.drop_table("early_statuses")
