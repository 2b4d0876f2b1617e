"""Tenants and API keys: bootstrap, authentication, administration."""

from __future__ import annotations

import hmac
import re
import time
from dataclasses import dataclass

from croupier.domain.clock import Clock
from croupier.domain.errors import (
    ConcurrentWrite,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from croupier.domain.ids import new_id
from croupier.domain.tenants import (
    DEFAULT_TENANT,
    KEY_PREFIX,
    ApiKey,
    Principal,
    Tenant,
    generate_key,
    hash_key,
    key_prefix,
)
from croupier.services.pagination import Page, check_limit, encode_cursor, str_cursor
from croupier.services.ports import Store, UnitOfWork

_TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Bootstrap:
    """What the first start did: the default tenant, and a new admin key if one was made."""

    tenant: Tenant
    generated_admin_key: str | None


@dataclass(frozen=True)
class IssuedKey:
    """A key as created: ``secret`` is shown this once and never stored."""

    key: ApiKey
    secret: str


#: How long a verified key is trusted without asking the store again.
AUTH_CACHE_SECONDS = 5.0
_AUTH_CACHE_MAX = 1024


class TenantService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        # digest -> (principal, monotonic expiry): spares the store a read on every request
        self._verified: dict[str, tuple[Principal, float]] = {}

    async def bootstrap(self, admin_key: str | None, *, generate: bool = True) -> Bootstrap:
        """Make sure the ``default`` tenant and an admin key exist.

        ``admin_key`` (from ``CROUPIER_ADMIN_KEY``) is registered if it is new. Without one,
        and with ``generate``, a key is made at the very first start only, and returned so
        it can be shown. Processes starting together may race here; the loser looks again.
        """
        try:
            return await self._bootstrap(admin_key, generate=generate)
        except ConcurrentWrite:
            return await self._bootstrap(admin_key, generate=generate)

    async def _bootstrap(self, admin_key: str | None, *, generate: bool) -> Bootstrap:
        if admin_key is not None and len(admin_key) < 20:
            raise ValidationFailed(
                "CROUPIER_ADMIN_KEY must be at least 20 characters", field="admin_key"
            )
        now = self.clock.now_ms()

        def work(uow: UnitOfWork) -> Bootstrap:
            tenant = uow.tenants.get(DEFAULT_TENANT)
            if tenant is None:
                tenant = Tenant(DEFAULT_TENANT, DEFAULT_TENANT, now)
                uow.tenants.add(tenant)
            generated = None
            if admin_key is not None:
                if uow.keys.find_by_hash(hash_key(admin_key)) is None:
                    uow.keys.add(_new_key(tenant.id, "admin", admin_key, now, admin=True))
            elif generate and not uow.keys.has_admin():
                generated = generate_key()
                uow.keys.add(_new_key(tenant.id, "admin", generated, now, admin=True))
            return Bootstrap(tenant, generated)

        return await self.store.run(work)

    async def authenticate(self, raw_key: str | None) -> Principal:
        if not raw_key:
            raise Unauthorized("missing API key: send Authorization: Bearer <key>")
        digest = hash_key(raw_key)
        cached = self._verified.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        key = await self.store.run(lambda uow: uow.keys.find_by_hash(digest), write=False)
        # The lookup is by digest; the comparison below is constant-time all the same.
        if (
            key is None
            or key.revoked_at_ms is not None
            or not hmac.compare_digest(key.key_hash, digest)
        ):
            raise Unauthorized("the API key is not valid")
        principal = Principal(tenant_id=key.tenant_id, key_id=key.id, is_admin=key.is_admin)
        if len(self._verified) >= _AUTH_CACHE_MAX:
            self._verified.clear()
        self._verified[digest] = (principal, time.monotonic() + AUTH_CACHE_SECONDS)
        return principal

    async def create_tenant(self, principal: Principal, name: str) -> Tenant:
        _require_admin(principal)
        if not _TENANT_NAME.match(name):
            raise ValidationFailed(
                "name must be 1-63 lowercase letters, digits, '-' or '_'", field="name"
            )
        tenant = Tenant(id=new_id("ten"), name=name, created_at_ms=self.clock.now_ms())

        def work(uow: UnitOfWork) -> None:
            if uow.tenants.get_by_name(name) is not None:
                raise Conflict(f"a tenant named {name!r} exists")
            uow.tenants.add(tenant)

        await self.store.run(work)
        return tenant

    async def list_tenants(
        self, principal: Principal, *, limit: int, cursor: str | None
    ) -> Page[Tenant]:
        _require_admin(principal)
        check_limit(limit)
        after = str_cursor(cursor)
        rows = await self.store.run(
            lambda uow: uow.tenants.page(limit=limit + 1, after=after), write=False
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor(rows[-1].id) if more else None)

    async def create_key(
        self, principal: Principal | None, tenant: str, *, name: str = "", admin: bool = False
    ) -> IssuedKey:
        """Issue a key for ``tenant`` (an id or a name). ``principal`` None means the CLI."""
        if principal is not None:
            _require_admin(principal)
        secret = generate_key()
        now = self.clock.now_ms()

        def work(uow: UnitOfWork) -> ApiKey:
            found = uow.tenants.get(tenant) or uow.tenants.get_by_name(tenant)
            if found is None:
                raise NotFound(f"no tenant {tenant!r}")
            if admin and found.id != DEFAULT_TENANT:
                raise ValidationFailed(
                    "admin keys belong to the default tenant: an operator tenant's key "
                    "must not administer the others",
                    field="admin",
                )
            key = _new_key(found.id, name, secret, now, admin=admin)
            uow.keys.add(key)
            return key

        return IssuedKey(await self.store.run(work), secret)


def _new_key(tenant_id: str, name: str, raw: str, now_ms: int, *, admin: bool) -> ApiKey:
    return ApiKey(
        id=new_id("key"),
        tenant_id=tenant_id,
        name=name,
        prefix=key_prefix(raw) if raw.startswith(KEY_PREFIX) else raw[:4],
        key_hash=hash_key(raw),
        is_admin=admin,
        created_at_ms=now_ms,
    )


def _require_admin(principal: Principal) -> None:
    # Only the default tenant's admin keys administer; defence in depth against an admin
    # flag that reached another tenant's key.
    if not principal.is_admin or principal.tenant_id != DEFAULT_TENANT:
        raise Forbidden("this needs the admin key")
