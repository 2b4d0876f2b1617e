"""The schema, in SQLAlchemy Core. Times are integer epoch milliseconds on every backend.

Migrations in ``croupier/migrations`` create exactly these tables; a contract test checks
that the two agree.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from croupier.domain.health import BUCKETS

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: The latency histogram's columns in ``endpoint_stats``, one per bucket.
HISTOGRAM_COLUMNS = tuple(f"h{i:02d}" for i in range(BUCKETS))

#: A 64-bit key that SQLite still treats as its rowid (and so auto-increments).
Seq = BigInteger().with_variant(Integer(), "sqlite")

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False, server_default=""),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("is_admin", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)

event_types = Table(
    "event_types",
    metadata,
    Column("tenant_id", String(64), ForeignKey("tenants.id"), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("schema", Text, nullable=False),
    Column("schema_version", String(32), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # Non-core types are paused (kept, not sent) while the backlog is over its threshold.
    Column("core", Boolean, nullable=False, server_default=text("true")),
)

endpoints = Table(
    "endpoints",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("event_types", Text, nullable=False),
    Column("secret", Text, nullable=False),
    Column("dialect", String(32), nullable=False, server_default="standard"),
    Column("header_prefix", String(64), nullable=False, server_default="Croupier"),
    Column("format", String(16), nullable=False, server_default="envelope"),
    # Secrets are stored sealed (croupier.store.secretbox), never in the clear.
    Column("previous_secret", Text, nullable=True),
    Column("previous_secret_until", BigInteger, nullable=True),
    Column("headers", Text, nullable=False, server_default="{}"),
    Column("timeout_ms", Integer, nullable=False),
    Column("retry_schedule", Text, nullable=False),
    Column("ordered", Boolean, nullable=False, server_default=text("false")),
    Column("disabled", Boolean, nullable=False, server_default=text("false")),
    Column("disabled_reason", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("deleted_at", BigInteger, nullable=True),
    Column("version", Integer, nullable=False, server_default="1"),
    # Delivery controls (migration 0005): NULL means the worker's default.
    Column("rate_limit_per_s", Float, nullable=True),
    Column("max_in_flight", Integer, nullable=True),
    Column("breaker", Text, nullable=True),
    # Health, written by the workers (not part of ``version``, which tracks what senders
    # must know): the breaker, the rate limit's bucket, and the run of failures.
    Column("breaker_state", String(16), nullable=False, server_default="closed"),
    Column("breaker_until", BigInteger, nullable=True),
    Column("breaker_opened_at", BigInteger, nullable=True),
    Column("consecutive_failures", Integer, nullable=False, server_default="0"),
    Column("rate_tokens", Float, nullable=True),
    Column("rate_at", BigInteger, nullable=True),
    Column("failing_since", BigInteger, nullable=True),
    Column("last_success_at", BigInteger, nullable=True),
    Column("disabled_at", BigInteger, nullable=True),
)

events = Table(
    "events",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("id", String(200), nullable=False),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("type", String(200), nullable=False),
    Column("schema_version", String(32), nullable=False),
    Column("data", Text, nullable=False),
    Column("ordering_key", String(200), nullable=True),
    Column("occurred_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("idempotency_key", String(200), nullable=True),
    Column("fingerprint", String(64), nullable=False),
    Column("trace_id", String(64), nullable=True),
    Column("delivery_count", Integer, nullable=False, server_default="0"),
    UniqueConstraint("tenant_id", "id"),
    UniqueConstraint("tenant_id", "idempotency_key"),
    Index("ix_events_tenant_id_type_seq", "tenant_id", "type", "seq"),
    Index("ix_events_tenant_id_created_at", "tenant_id", "created_at"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("event_seq", BigInteger, ForeignKey("events.seq"), nullable=False, index=True),
    Column("event_id", String(200), nullable=False),
    Column("endpoint_id", String(64), ForeignKey("endpoints.id"), nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    # attempts made before the current retry cycle began (a replay starts a new cycle)
    Column("cycle_start", Integer, nullable=False, server_default="0"),
    Column("due_at", BigInteger, nullable=True),
    Column("lease_until", BigInteger, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    # the event's ordering key, set only when the endpoint delivers in order
    Column("ordered_key", String(200), nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # Claims read free due deliveries per endpoint by due time, and expired leases by
    # lease time.
    Index(
        "ix_deliveries_endpoint_due",
        "endpoint_id",
        "due_at",
        sqlite_where=text("status IN ('pending', 'failed') AND lease_owner IS NULL"),
        postgresql_where=text("status IN ('pending', 'failed') AND lease_owner IS NULL"),
    ),
    Index(
        "ix_deliveries_leased",
        "lease_until",
        sqlite_where=text("status IN ('pending', 'failed') AND lease_owner IS NOT NULL"),
        postgresql_where=text("status IN ('pending', 'failed') AND lease_owner IS NOT NULL"),
    ),
    Index(
        "ix_deliveries_ordered",
        "endpoint_id",
        "ordered_key",
        "seq",
        sqlite_where=text("ordered_key IS NOT NULL AND status IN ('pending', 'failed')"),
        postgresql_where=text("ordered_key IS NOT NULL AND status IN ('pending', 'failed')"),
    ),
    Index("ix_deliveries_tenant_id_seq", "tenant_id", "seq"),
    Index("ix_deliveries_endpoint_id_created_at", "endpoint_id", "created_at"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("delivery_seq", BigInteger, ForeignKey("deliveries.seq"), nullable=False, index=True),
    Column("tenant_id", String(64), nullable=False),
    Column("number", Integer, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("request_headers", Text, nullable=False, server_default="{}"),
    Column("response_headers", Text, nullable=False, server_default="{}"),
    Column("response_body", Text, nullable=False, server_default=""),
)

# -- the wallet ---------------------------------------------------------------------------
# Amounts are integers of minor units. A player's balances are kept on the player's row,
# which every money movement of that player locks first; the postings are the ledger that
# `croupier wallet check` proves them against.

currencies = Table(
    "currencies",
    metadata,
    Column("tenant_id", String(64), ForeignKey("tenants.id"), primary_key=True),
    Column("code", String(12), primary_key=True),
    Column("exponent", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

players = Table(
    "players",
    metadata,
    Column("tenant_id", String(64), ForeignKey("tenants.id"), primary_key=True),
    Column("id", String(200), primary_key=True),
    Column("currency", String(12), nullable=False),
    Column("available", BigInteger, nullable=False, server_default="0"),
    Column("held", BigInteger, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

wallet_sessions = Table(
    "wallet_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("player_id", String(200), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)

wallet_transactions = Table(
    "wallet_transactions",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("player_id", String(200), nullable=False),
    # bet | win | rollback | credit | adjustment
    Column("kind", String(16), nullable=False),
    # the bet, credit or adjustment this transaction belongs to
    Column("reference", String(200), nullable=False),
    Column("round_id", String(200), nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(12), nullable=False),
    Column("available_after", BigInteger, nullable=False),
    Column("held_after", BigInteger, nullable=False),
    Column("reason", String(200), nullable=True),
    Column("trace_id", String(64), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_wallet_transactions_tenant_id_player_id_seq", "tenant_id", "player_id", "seq"),
)

postings = Table(
    "postings",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column(
        "transaction_seq",
        BigInteger,
        ForeignKey("wallet_transactions.seq"),
        nullable=False,
        index=True,
    ),
    # available | held (a player's) | house | external (the tenant's)
    Column("account", String(16), nullable=False),
    # the player for a player's account; "" for the tenant's own accounts
    Column("player_id", String(200), nullable=False),
    Column("currency", String(12), nullable=False),
    Column("amount", BigInteger, nullable=False),
)

bets = Table(
    "bets",
    metadata,
    Column("tenant_id", String(64), ForeignKey("tenants.id"), primary_key=True),
    Column("id", String(200), primary_key=True),
    Column("player_id", String(200), nullable=True),
    Column("round_id", String(200), nullable=True),
    Column("session_id", String(64), nullable=True),
    # null for a bet cancelled before croupier saw it authorized: it may never be
    Column("hold_id", String(64), nullable=True, unique=True),
    Column("amount", BigInteger, nullable=True),
    Column("currency", String(12), nullable=True),
    # authorized | settled | cancelled
    Column("status", String(16), nullable=False),
    Column("win", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

credits = Table(
    "credits",
    metadata,
    Column("tenant_id", String(64), ForeignKey("tenants.id"), primary_key=True),
    Column("id", String(200), primary_key=True),
    Column("player_id", String(200), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(12), nullable=False),
    Column("reason", String(64), nullable=False),
    Column("campaign_id", String(200), nullable=True),
    Column("transaction_id", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

idempotency_records = Table(
    "idempotency_records",
    metadata,
    Column("tenant_id", String(64), ForeignKey("tenants.id"), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    # the answer, as the service returned it: {"result": {...}} or {"error": {...}}
    Column("outcome", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False, index=True),
)

#: Attempts per endpoint and minute: counts, failures, a latency histogram (bucket ``i``
#: counts durations up to ``croupier.domain.health.LATENCY_BOUNDS_MS[i]``), the last error.
#: Endpoint stats and the breaker's failure rate read it; it is kept for two days.
endpoint_stats = Table(
    "endpoint_stats",
    metadata,
    Column("endpoint_id", String(64), ForeignKey("endpoints.id"), primary_key=True),
    Column("minute", BigInteger, primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("failures", Integer, nullable=False, server_default="0"),
    *(Column(name, Integer, nullable=False, server_default="0") for name in HISTOGRAM_COLUMNS),
    Column("last_error", Text, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error_at", BigInteger, nullable=True),
    Index("ix_endpoint_stats_minute", "minute"),
)
