"""Endpoints choose their body format and the prefix of the hmac-hex headers, and keep the
secret they had before a rotation, with the time it stops signing.

Secrets are encrypted at rest from this version on; the rows written before it are
encrypted by ``croupier migrate`` and at the start of ``serve`` (they need the key, which a
migration does not have).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        batch.add_column(
            sa.Column("header_prefix", sa.String(64), nullable=False, server_default="Croupier")
        )
        batch.add_column(
            sa.Column("format", sa.String(16), nullable=False, server_default="envelope")
        )
        batch.add_column(sa.Column("previous_secret", sa.Text(), nullable=True))
        batch.add_column(sa.Column("previous_secret_until", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        batch.drop_column("previous_secret_until")
        batch.drop_column("previous_secret")
        batch.drop_column("format")
        batch.drop_column("header_prefix")
