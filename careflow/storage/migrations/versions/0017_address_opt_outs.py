"""address opt-outs: a customer's own opt-out kept by (hashed) address, so no import re-grants it;
indexes to match inbound messages by phone and WhatsApp number

Revision ID: 0017_address_opt_outs
Revises: 0016_weather_refresh
Create Date: 2026-12-05 20:00:00
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_address_opt_outs"
down_revision: str | None = "0016_weather_refresh"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "address_opt_outs",
        sa.Column("id", sa.Integer().with_variant(sa.BigInteger(), "postgresql"), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_address_opt_outs")),
        sa.UniqueConstraint(
            "channel",
            "address_hash",
            "purpose",
            name=op.f("uq_address_opt_outs_channel_address_hash_purpose"),
        ),
    )
    # Inbound messages are matched to cards by phone or WhatsApp number: no full scan per reply.
    op.create_index("ix_customers_phone", "customers", ["phone"])
    op.create_index("ix_customers_whatsapp", "customers", ["whatsapp"])
    # Opt-outs customers gave before this table existed are kept by address too.
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT c.channel, c.purpose, c.source, c.updated_at, u.phone, u.whatsapp, u.email"
            " FROM consents c JOIN customers u ON u.id = c.customer_id"
            " WHERE c.granted = :no AND c.source IN ('reply:STOP', 'unsubscribe-link', 'provider:21610')"
        ),
        {"no": False},
    ).all()
    seen: set[tuple[str, str, str]] = set()
    table = sa.table(
        "address_opt_outs",
        sa.column("channel", sa.String),
        sa.column("address_hash", sa.String),
        sa.column("purpose", sa.String),
        sa.column("source", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    values = []
    for channel, purpose, source, updated_at, phone, whatsapp, email in rows:
        address = {"sms": phone, "whatsapp": whatsapp, "email": email}.get(channel)
        if not address:
            continue
        canonical = address.strip().removeprefix("whatsapp:")
        canonical = canonical.lower() if channel == "email" else canonical
        key = (channel, hashlib.sha256(f"{channel}:{canonical}".encode()).hexdigest(), purpose)
        if key not in seen:
            seen.add(key)
            values.append(
                {
                    "channel": key[0],
                    "address_hash": key[1],
                    "purpose": purpose,
                    "source": source,
                    "created_at": updated_at,
                }
            )
    if values:
        op.bulk_insert(table, values)


def downgrade() -> None:
    op.drop_index("ix_customers_whatsapp", table_name="customers")
    op.drop_index("ix_customers_phone", table_name="customers")
    op.drop_table("address_opt_outs")
