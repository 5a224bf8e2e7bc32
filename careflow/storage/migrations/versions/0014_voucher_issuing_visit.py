"""vouchers: the visit at whose checkout a voucher was redeemed

Revision ID: 0014_voucher_issuing_visit
Revises: 0013_consent_history
Create Date: 2026-12-05 01:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_voucher_issuing_visit"
down_revision: str | None = "0013_consent_history"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("vouchers") as batch:
        batch.add_column(
            sa.Column(
                "issued_visit_id", sa.Integer().with_variant(sa.BigInteger(), "postgresql"), nullable=True
            )
        )
        batch.create_foreign_key(
            op.f("fk_vouchers_issued_visit_id_service_visits"),
            "service_visits",
            ["issued_visit_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("vouchers") as batch:
        batch.drop_constraint(op.f("fk_vouchers_issued_visit_id_service_visits"), type_="foreignkey")
        batch.drop_column("issued_visit_id")
