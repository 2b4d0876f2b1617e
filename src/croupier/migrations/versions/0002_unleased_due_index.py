"""Claims read due deliveries per endpoint, and never step over the ones in flight.

The due index was one list by due time for all endpoints: a claim stepped over every
delivery in flight (the oldest due) and over the backlog of every endpoint that had no room,
to reach the ones it could take. Now free due deliveries are indexed per endpoint by due
time, and leased ones by lease time, so that expired leases are found on their own.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OPEN = "status IN ('pending', 'failed')"
FREE = f"{OPEN} AND lease_owner IS NULL"
LEASED = f"{OPEN} AND lease_owner IS NOT NULL"


def upgrade() -> None:
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.create_index(
        "ix_deliveries_endpoint_due",
        "deliveries",
        ["endpoint_id", "due_at"],
        sqlite_where=sa.text(FREE),
        postgresql_where=sa.text(FREE),
    )
    op.create_index(
        "ix_deliveries_leased",
        "deliveries",
        ["lease_until"],
        sqlite_where=sa.text(LEASED),
        postgresql_where=sa.text(LEASED),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_leased", table_name="deliveries")
    op.drop_index("ix_deliveries_endpoint_due", table_name="deliveries")
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["due_at"],
        sqlite_where=sa.text(OPEN),
        postgresql_where=sa.text(OPEN),
    )
