"""sign-in failures: the console locks an account or a client address out after repeated failures

Revision ID: 0011_sign_in_failures
Revises: 0010_planning_indexes
Create Date: 2026-11-23 18:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_sign_in_failures"
down_revision: str | None = "0010_planning_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sign_in_failures",
        sa.Column("id", sa.Integer().with_variant(sa.BigInteger(), "postgresql"), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_in_failures")),
    )
    for column in ("email", "address", "at"):
        op.create_index(op.f(f"ix_sign_in_failures_{column}"), "sign_in_failures", [column])


def downgrade() -> None:
    for column in ("email", "address", "at"):
        op.drop_index(op.f(f"ix_sign_in_failures_{column}"), table_name="sign_in_failures")
    op.drop_table("sign_in_failures")
