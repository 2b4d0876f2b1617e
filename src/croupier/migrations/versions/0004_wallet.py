"""The wallet: currencies, players with their balances, game sessions, bets, credits, the
ledger (wallet transactions and their postings), and idempotency records.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], ["tenants.id"], name=f"fk_{table}_tenant_id_tenants"
    )


def upgrade() -> None:
    op.create_table(
        "currencies",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("code", sa.String(12), nullable=False),
        sa.Column("exponent", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        _tenant_fk("currencies"),
        sa.PrimaryKeyConstraint("tenant_id", "code", name="pk_currencies"),
    )
    op.create_table(
        "players",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(12), nullable=False),
        sa.Column("available", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("held", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        _tenant_fk("players"),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_players"),
    )
    op.create_table(
        "wallet_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("player_id", sa.String(200), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        _tenant_fk("wallet_sessions"),
        sa.PrimaryKeyConstraint("id", name="pk_wallet_sessions"),
    )
    op.create_table(
        "wallet_transactions",
        sa.Column("seq", Seq, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("player_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("round_id", sa.String(200), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(12), nullable=False),
        sa.Column("available_after", sa.BigInteger(), nullable=False),
        sa.Column("held_after", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("trace_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        _tenant_fk("wallet_transactions"),
        sa.PrimaryKeyConstraint("seq", name="pk_wallet_transactions"),
        sa.UniqueConstraint("id", name="uq_wallet_transactions_id"),
    )
    op.create_index(
        "ix_wallet_transactions_tenant_id_player_id_seq",
        "wallet_transactions",
        ["tenant_id", "player_id", "seq"],
    )
    op.create_table(
        "postings",
        sa.Column("seq", Seq, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("transaction_seq", sa.BigInteger(), nullable=False),
        sa.Column("account", sa.String(16), nullable=False),
        sa.Column("player_id", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(12), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        _tenant_fk("postings"),
        sa.ForeignKeyConstraint(
            ["transaction_seq"],
            ["wallet_transactions.seq"],
            name="fk_postings_transaction_seq_wallet_transactions",
        ),
        sa.PrimaryKeyConstraint("seq", name="pk_postings"),
    )
    op.create_index("ix_postings_transaction_seq", "postings", ["transaction_seq"])
    op.create_table(
        "bets",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("player_id", sa.String(200), nullable=True),
        sa.Column("round_id", sa.String(200), nullable=True),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("hold_id", sa.String(64), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(12), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("win", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        _tenant_fk("bets"),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_bets"),
        sa.UniqueConstraint("hold_id", name="uq_bets_hold_id"),
    )
    op.create_table(
        "credits",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("player_id", sa.String(200), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(12), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("campaign_id", sa.String(200), nullable=True),
        sa.Column("transaction_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        _tenant_fk("credits"),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_credits"),
    )
    op.create_table(
        "idempotency_records",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        _tenant_fk("idempotency_records"),
        sa.PrimaryKeyConstraint("tenant_id", "key", name="pk_idempotency_records"),
    )
    op.create_index("ix_idempotency_records_expires_at", "idempotency_records", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_records_expires_at", "idempotency_records")
    op.drop_table("idempotency_records")
    op.drop_table("credits")
    op.drop_table("bets")
    op.drop_index("ix_postings_transaction_seq", "postings")
    op.drop_table("postings")
    op.drop_index("ix_wallet_transactions_tenant_id_player_id_seq", "wallet_transactions")
    op.drop_table("wallet_transactions")
    op.drop_table("wallet_sessions")
    op.drop_table("players")
    op.drop_table("currencies")
