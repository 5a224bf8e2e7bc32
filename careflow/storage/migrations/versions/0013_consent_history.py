"""consent history: every change of a consent, with its source, time and who recorded it

Revision ID: 0013_consent_history
Revises: 0012_early_statuses
Create Date: 2026-12-05 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_consent_history"
down_revision: str | None = "0012_early_statuses"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consent_changes",
        sa.Column("id", sa.Integer().with_variant(sa.BigInteger(), "postgresql"), nullable=False),
        sa.Column("customer_id", sa.Integer().with_variant(sa.BigInteger(), "postgresql"), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=320), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_consent_changes_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_changes")),
    )
    op.create_index("ix_consent_changes_customer_id", "consent_changes", ["customer_id", "id"])
    # Today's consents become the first entry of each history, so no card starts out blank.
    op.execute(
        "INSERT INTO consent_changes (customer_id, channel, purpose, granted, source, actor, note,"
        " effective_at, recorded_at)"
        " SELECT customer_id, channel, purpose, granted, source, NULL,"
        " 'recorded before consent history was kept', updated_at, updated_at FROM consents"
    )


def downgrade() -> None:
    op.drop_index("ix_consent_changes_customer_id", table_name="consent_changes")
    op.drop_table("consent_changes")
