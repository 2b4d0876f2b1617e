"""Tenants and their API keys."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

KEY_PREFIX = "ck_"
DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    created_at_ms: int


@dataclass(frozen=True)
class ApiKey:
    """A stored key: only its SHA-256 is kept, never the key itself."""

    id: str
    tenant_id: str
    name: str
    prefix: str
    key_hash: str
    is_admin: bool
    created_at_ms: int
    revoked_at_ms: int | None = None


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant every query is scoped to, and whether it may administer."""

    tenant_id: str
    key_id: str
    is_admin: bool


def generate_key() -> str:
    """A new API key: ``ck_`` + 43 characters of URL-safe base64 (256 random bits)."""
    return KEY_PREFIX + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def hash_key(raw: str) -> str:
    """Keys carry 256 random bits, so a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(raw.encode()).hexdigest()


def key_prefix(raw: str) -> str:
    """The part of a key that may be shown to identify it."""
    return raw[: len(KEY_PREFIX) + 6]
