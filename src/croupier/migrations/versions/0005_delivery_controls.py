"""Delivery under stress: per-endpoint rate limit, concurrency and circuit breaker settings;
the endpoint's health (breaker state, rate-limit bucket, run of failures); event types
marked core or not; attempts counted per endpoint and minute for stats and the breaker.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: One column per latency bucket (``croupier.domain.health.LATENCY_BOUNDS_MS`` and one more);
#: written out so that this migration never changes with the code.
HISTOGRAM_COLUMNS = tuple(f"h{i:02d}" for i in range(29))


def _endpoint_columns() -> tuple[sa.Column[object], ...]:
    return (
        sa.Column("rate_limit_per_s", sa.Float(), nullable=True),
        sa.Column("max_in_flight", sa.Integer(), nullable=True),
        sa.Column("breaker", sa.Text(), nullable=True),
        sa.Column("breaker_state", sa.String(16), nullable=False, server_default="closed"),
        sa.Column("breaker_until", sa.BigInteger(), nullable=True),
        sa.Column("breaker_opened_at", sa.BigInteger(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("rate_tokens", sa.Float(), nullable=True),
        sa.Column("rate_at", sa.BigInteger(), nullable=True),
        sa.Column("failing_since", sa.BigInteger(), nullable=True),
        sa.Column("last_success_at", sa.BigInteger(), nullable=True),
        sa.Column("disabled_at", sa.BigInteger(), nullable=True),
    )


def upgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        for column in _endpoint_columns():
            batch.add_column(column)
    with op.batch_alter_table("event_types") as batch:
        batch.add_column(
            sa.Column("core", sa.Boolean(), nullable=False, server_default=sa.text("true"))
        )
    op.create_table(
        "endpoint_stats",
        sa.Column("endpoint_id", sa.String(64), nullable=False),
        sa.Column("minute", sa.BigInteger(), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        *(
            sa.Column(name, sa.Integer(), nullable=False, server_default="0")
            for name in HISTOGRAM_COLUMNS
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["endpoint_id"], ["endpoints.id"], name="fk_endpoint_stats_endpoint_id_endpoints"
        ),
        sa.PrimaryKeyConstraint("endpoint_id", "minute", name="pk_endpoint_stats"),
    )
    op.create_index("ix_endpoint_stats_minute", "endpoint_stats", ["minute"])


def downgrade() -> None:
    op.drop_index("ix_endpoint_stats_minute", table_name="endpoint_stats")
    op.drop_table("endpoint_stats")
    with op.batch_alter_table("event_types") as batch:
        batch.drop_column("core")
    with op.batch_alter_table("endpoints") as batch:
        for column in reversed(_endpoint_columns()):
            batch.drop_column(column.name)
