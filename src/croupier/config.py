"""Settings: flags override ``CROUPIER_*`` environment variables, which override defaults."""

from __future__ import annotations

import os

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from croupier.domain.network import AddressPolicy

#: ``CROUPIER_SENDERS`` accepts up to this many sender processes.
MAX_SENDERS = 64
#: ``auto`` runs one sender process per two cores, up to this many.
AUTO_SENDERS_MAX = 4


class Settings(BaseSettings):
    """Everything croupier can be told at start-up."""

    model_config = SettingsConfigDict(env_prefix="CROUPIER_", extra="ignore")

    database_url: str = "sqlite:///./croupier.db"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    admin_key: str | None = Field(default=None, repr=False)
    #: Fernet keys, comma-separated, that seal endpoint secrets at rest (the first seals).
    secret_key: SecretStr | None = Field(default=None, repr=False)
    #: Networks (CIDRs, comma- or space-separated) endpoints may reach though not public.
    allow_networks: str = ""
    #: Let endpoints reach this machine (127.0.0.0/8, ::1): ``serve --dev``.
    allow_loopback: bool = False
    environment: str = "production"
    log_level: str = "info"
    max_body_bytes: int = 256 * 1024

    # wallet
    grpc_port: int = Field(
        default=50051, ge=0, le=65535, description="the wallet's gRPC port; 0 picks a free one"
    )
    grpc_enabled: bool = True
    idempotency_days: int = Field(
        default=7, ge=1, le=3650, description="how long wallet idempotency keys are kept"
    )
    session_ttl_seconds: int = Field(
        default=3600, ge=1, le=7 * 86400, description="a game session's life when not given"
    )

    # dispatcher
    dispatcher_enabled: bool = True
    #: Tests and drills only: the store and the dispatcher see time run this many times
    #: faster than the wall clock (retry schedules, leases' due times, auto-disable).
    time_scale: float = Field(default=1.0, gt=0, le=100_000)
    claim_batch: int = Field(default=500, ge=1, le=10_000)
    max_in_flight: int = Field(default=512, ge=1, description="concurrent requests, all endpoints")
    endpoint_max_in_flight: int = Field(
        default=16, ge=1, description="concurrent requests to one endpoint"
    )
    max_retries_in_flight: int = Field(
        default=128,
        ge=1,
        description="retries of other than money events in flight at once, all endpoints",
    )
    overload_backlog: int = Field(
        default=100_000,
        ge=1,
        description="due deliveries beyond which non-core event types pause until core work drains",
    )
    auto_disable_days: float = Field(
        default=5.0,
        gt=0,
        description="an endpoint failing without a single success this long is disabled",
    )
    lease_seconds: float = Field(default=60.0, gt=0)
    idle_poll_seconds: float = Field(default=1.0, gt=0)
    flush_batch: int = Field(default=1000, ge=1)
    drain_seconds: float = Field(default=15.0, ge=0)
    retry_after_cap_seconds: int = Field(default=3600, ge=0)
    retry_jitter: float = Field(default=0.1, ge=0, le=1)
    senders: int = Field(
        default=-1,
        ge=-1,
        le=MAX_SENDERS,
        description=(
            "sender child processes that render, sign and POST webhooks beside the one that "
            "serves the API and claims and records: N children, 0 = none (send in this "
            f"process), -1 or auto = one per two cores, at most {AUTO_SENDERS_MAX}, and none "
            "on a single core"
        ),
    )

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        AddressPolicy.parse(value)  # a bad entry stops the start, naming it
        return value

    def address_policy(self) -> AddressPolicy:
        """Which addresses endpoints may resolve to (the SSRF guard)."""
        return AddressPolicy.parse(self.allow_networks, allow_loopback=self.allow_loopback)

    @field_validator("senders", mode="before")
    @classmethod
    def _auto_senders(cls, value: object) -> object:
        return -1 if isinstance(value, str) and value.strip().lower() == "auto" else value

    def sender_processes(self) -> int:
        """How many sender child processes to run, with ``auto`` (-1) resolved."""
        if self.senders >= 0:
            return self.senders
        cores = os.cpu_count() or 1
        # On one core a child only adds hops. A child now spends about half the CPU per
        # delivery that the main process does (claiming, recording, the API), so on two cores
        # one child beat two (by about 7%, five interleaved pairs of bench runs), and the main
        # process, which claims and records for all of them, stays the limit beyond four.
        return min(max(cores // 2, 1), AUTO_SENDERS_MAX) if cores >= 2 else 0

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, url: str) -> str:
        if not url.startswith(("sqlite", "postgresql", "postgres://")):
            raise ValueError("CROUPIER_DATABASE_URL must be a sqlite:/// or postgresql:// URL")
        return url
