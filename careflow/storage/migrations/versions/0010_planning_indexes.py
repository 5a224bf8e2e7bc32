"""planning indexes: date (or month/day) first, then the customer

Each planning window is an id range. With an index on the date alone, every window's query
walks all of the day's index entries and filters them by id afterwards; with the customer id
as the next index column, a window reads only its own entries. The single-column indexes
these replace are dropped (the new ones serve the same queries).

Revision ID: 0010_planning_indexes
Revises: 0009_scale
Create Date: 2026-11-23 16:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_planning_indexes"
down_revision: str | None = "0009_scale"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, old single-column index, its columns, new index, its columns)
_REPLACED: tuple[tuple[str, str, list[str], str, list[str]], ...] = (
    (
        "customers",
        "ix_customers_birthday",
        ["birth_month", "birth_day"],
        "ix_customers_birthday_id",
        ["birth_month", "birth_day", "id"],
    ),
    (
        "vehicles",
        "ix_vehicles_next_service_due",
        ["next_service_due"],
        "ix_vehicles_next_service_due_customer",
        ["next_service_due", "customer_id"],
    ),
    (
        "vehicles",
        "ix_vehicles_warranty_end",
        ["warranty_end"],
        "ix_vehicles_warranty_end_customer",
        ["warranty_end", "customer_id"],
    ),
    (
        "service_visits",
        "ix_service_visits_date",
        ["date"],
        "ix_service_visits_date_customer",
        ["date", "customer_id"],
    ),
    (
        "vouchers",
        "ix_vouchers_expires_on",
        ["expires_on"],
        "ix_vouchers_expires_customer",
        ["expires_on", "customer_id"],
    ),
    (
        "points_ledger",
        "ix_points_ledger_expires_on",
        ["expires_on"],
        "ix_points_ledger_expires_customer",
        ["expires_on", "customer_id"],
    ),
)

# Partial indexes on customers: (name, condition).
_PARTIAL = (
    ("ix_customers_birthday_own_tz", "timezone IS NOT NULL"),
    ("ix_customers_birthday_lunar", "birthday_calendar = 'lunar'"),
)


def upgrade() -> None:
    for table, old, _old_columns, new, columns in _REPLACED:
        op.create_index(new, table, columns, unique=False)
        op.drop_index(old, table_name=table)
    op.create_index("ix_customers_city_id", "customers", ["city", "id"], unique=False)  # weather
    op.create_index(  # survey follow-ups: the staff cards
        "ix_customers_staff",
        "customers",
        ["id"],
        unique=False,
        sqlite_where=sa.text("is_staff IS 1"),
        postgresql_where=sa.text("is_staff IS true"),
    )
    for name, condition in _PARTIAL:
        op.create_index(
            name,
            "customers",
            ["birth_month", "birth_day", "id"],
            unique=False,
            sqlite_where=sa.text(condition),
            postgresql_where=sa.text(condition),
        )


def downgrade() -> None:
    op.drop_index("ix_customers_staff", table_name="customers")
    op.drop_index("ix_customers_city_id", table_name="customers")
    for name, _condition in _PARTIAL:
        op.drop_index(name, table_name="customers")
    for table, old, old_columns, new, _columns in _REPLACED:
        op.create_index(old, table, old_columns, unique=False)
        op.drop_index(new, table_name=table)
