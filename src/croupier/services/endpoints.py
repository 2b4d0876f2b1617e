"""Endpoints: create, read, change, delete, all within one tenant."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from croupier.catalog import DEFAULT_SUBSCRIPTIONS
from croupier.domain.clock import Clock
from croupier.domain.endpoints import (
    DEFAULT_TIMEOUT_MS,
    Endpoint,
    validate_format,
    validate_headers,
    validate_max_in_flight,
    validate_timeout,
    validate_url,
)
from croupier.domain.errors import InvalidUrl, NotFound, ValidationFailed
from croupier.domain.health import CLOSED, BreakerSettings, validate_rate
from croupier.domain.ids import new_id
from croupier.domain.network import AddressPolicy, RefusedAddress, UnresolvableHost, check_host
from croupier.domain.retry import DEFAULT_SCHEDULE, validate_schedule
from croupier.domain.signing import (
    DEFAULT_HEADER_PREFIX,
    DIALECTS,
    generate_secret,
    public_key,
    signature_headers,
    validate_header_prefix,
    validate_secret,
)
from croupier.services.event_types import EventTypeService
from croupier.services.pagination import Page, check_limit, encode_cursor, str_cursor
from croupier.services.ports import Store, UnitOfWork

MAX_EVENT_TYPES = 200
#: How long creating an endpoint waits for its host to resolve before accepting it.
RESOLVE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class EndpointSpec:
    """What a caller may set on an endpoint; None means "the default" on create."""

    url: str
    event_types: Sequence[str] | None = None
    secret: str | None = None
    headers: Mapping[str, str] | None = None
    timeout_ms: int | None = None
    retry_schedule: Sequence[int] | None = None
    ordered: bool = False
    description: str = ""
    disabled: bool = False
    dialect: str = "standard"
    header_prefix: str = DEFAULT_HEADER_PREFIX
    format: str = "envelope"
    rate_limit_per_s: float | None = None
    max_in_flight: int | None = None
    breaker: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class EndpointSecret:
    """What a receiver needs to verify: the secret (and, for ed25519, the public key)."""

    secret: str
    public_key: str | None
    #: The secret before the last rotation, while it still signs; and until when.
    previous_secret: str | None
    previous_secret_until_ms: int | None


#: A rotation's grace window at most: 30 days.
MAX_GRACE_SECONDS = 30 * 86_400
DEFAULT_GRACE_SECONDS = 86_400

#: Fields PATCH may change.
MUTABLE_FIELDS = frozenset(
    {
        "url",
        "event_types",
        "secret",
        "headers",
        "timeout_ms",
        "retry_schedule",
        "ordered",
        "description",
        "disabled",
        "dialect",
        "header_prefix",
        "format",
        "rate_limit_per_s",
        "max_in_flight",
        "breaker",
    }
)
#: Fields PATCH may set to null, which means "back to the default".
NULLABLE_FIELDS = frozenset({"event_types", "rate_limit_per_s", "max_in_flight", "breaker"})


class EndpointService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        event_types: EventTypeService,
        *,
        address_policy: AddressPolicy | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.event_types = event_types
        self.address_policy = address_policy if address_policy is not None else AddressPolicy()

    async def create(self, tenant_id: str, spec: EndpointSpec) -> Endpoint:
        now = self.clock.now_ms()
        dialect = _dialect(spec.dialect)
        header_prefix = validate_header_prefix(spec.header_prefix)
        endpoint = Endpoint(
            id=new_id("ep"),
            tenant_id=tenant_id,
            url=await self._reachable(validate_url(spec.url)),
            secret=(
                validate_secret(spec.secret, dialect)
                if spec.secret is not None
                else generate_secret(dialect)
            ),
            event_types=await self._subscriptions(tenant_id, spec.event_types),
            headers=_headers(spec.headers or {}, dialect, header_prefix),
            timeout_ms=validate_timeout(
                spec.timeout_ms if spec.timeout_ms is not None else DEFAULT_TIMEOUT_MS
            ),
            retry_schedule=validate_schedule(
                spec.retry_schedule if spec.retry_schedule is not None else DEFAULT_SCHEDULE
            ),
            ordered=spec.ordered,
            description=_description(spec.description),
            disabled=spec.disabled,
            disabled_reason="disabled by request" if spec.disabled else None,
            dialect=dialect,
            header_prefix=header_prefix,
            format=validate_format(spec.format),
            rate_limit_per_s=validate_rate(spec.rate_limit_per_s),
            max_in_flight=validate_max_in_flight(spec.max_in_flight),
            breaker_settings=BreakerSettings.from_json(spec.breaker),
            disabled_at_ms=now if spec.disabled else None,
            created_at_ms=now,
            updated_at_ms=now,
        )
        await self.store.run(lambda uow: uow.endpoints.add(endpoint))
        return endpoint

    async def get(self, tenant_id: str, endpoint_id: str) -> Endpoint:
        endpoint = await self.store.run(
            lambda uow: uow.endpoints.get(tenant_id, endpoint_id), write=False
        )
        if endpoint is None:
            raise NotFound(f"no endpoint {endpoint_id!r}")
        return endpoint

    async def list(self, tenant_id: str, *, limit: int, cursor: str | None) -> Page[Endpoint]:
        check_limit(limit)
        after = str_cursor(cursor)
        rows = await self.store.run(
            lambda uow: uow.endpoints.page(tenant_id, limit=limit + 1, after=after), write=False
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor(rows[-1].id) if more else None)

    async def update(
        self, tenant_id: str, endpoint_id: str, changes: Mapping[str, Any]
    ) -> Endpoint:
        """Apply a partial change; fields not in ``changes`` keep their value."""
        unknown = set(changes) - MUTABLE_FIELDS
        if unknown:
            raise ValidationFailed(f"cannot change {sorted(unknown)}", field=sorted(unknown)[0])
        fields: dict[str, Any] = {}
        for name, value in changes.items():
            if value is None and name not in NULLABLE_FIELDS:
                raise ValidationFailed(f"{name} cannot be null", field=name)
            fields[name] = value
        if "url" in fields:
            fields["url"] = await self._reachable(validate_url(fields["url"]))
        if "event_types" in fields:
            fields["event_types"] = await self._subscriptions(tenant_id, fields["event_types"])
        if "header_prefix" in fields:
            fields["header_prefix"] = validate_header_prefix(fields["header_prefix"])
        if "format" in fields:
            fields["format"] = validate_format(fields["format"])
        if "timeout_ms" in fields:
            fields["timeout_ms"] = validate_timeout(fields["timeout_ms"])
        if "retry_schedule" in fields:
            fields["retry_schedule"] = validate_schedule(fields["retry_schedule"])
        if "description" in fields:
            fields["description"] = _description(fields["description"])
        if "dialect" in fields:
            fields["dialect"] = _dialect(fields["dialect"])
        if "rate_limit_per_s" in fields:
            fields["rate_limit_per_s"] = validate_rate(fields["rate_limit_per_s"])
        if "max_in_flight" in fields:
            fields["max_in_flight"] = validate_max_in_flight(fields["max_in_flight"])
        if "breaker" in fields:
            fields["breaker_settings"] = BreakerSettings.from_json(fields.pop("breaker"))
        now = self.clock.now_ms()
        if "disabled" in fields:
            fields["disabled_reason"] = "disabled by request" if fields["disabled"] else None

        def work(uow: UnitOfWork) -> Endpoint:
            current = uow.endpoints.get(tenant_id, endpoint_id)
            if current is None:
                raise NotFound(f"no endpoint {endpoint_id!r}")
            changed = dict(fields)
            dialect = changed.get("dialect", current.dialect)
            prefix = changed.get("header_prefix", current.header_prefix)
            if "secret" in changed:
                changed["secret"] = validate_secret(changed["secret"], dialect)
                changed["previous_secret"] = changed["previous_secret_until_ms"] = None
            elif dialect != current.dialect and not _carries_over(
                current.secret, current.dialect, dialect
            ):
                # The old secret cannot serve in the new dialect: a new one, in the answer.
                changed["secret"] = generate_secret(dialect)
                changed["previous_secret"] = changed["previous_secret_until_ms"] = None
            if "headers" in changed or "dialect" in changed or "header_prefix" in changed:
                changed["headers"] = _headers(
                    changed.get("headers", current.headers), dialect, prefix
                )
            if "disabled" in changed and changed["disabled"] != current.disabled:
                changed["disabled_at_ms"] = now if changed["disabled"] else None
                if not changed["disabled"]:
                    # Enabled again: a clean slate, or the next failure would disable it.
                    uow.endpoints.reset_health(tenant_id, endpoint_id)
                    changed |= {"breaker": CLOSED, "failing_since_ms": None}
            updated = dataclasses.replace(
                current, **changed, updated_at_ms=now, version=current.version + 1
            )
            uow.endpoints.update(updated)
            return updated

        return await self.store.run(work)

    async def secret(self, tenant_id: str, endpoint_id: str) -> EndpointSecret:
        endpoint = await self.get(tenant_id, endpoint_id)
        now = self.clock.now_ms()
        rotating = len(endpoint.signing_secrets(now)) > 1
        return EndpointSecret(
            secret=endpoint.secret,
            public_key=public_key(endpoint.secret) if endpoint.dialect == "ed25519" else None,
            previous_secret=endpoint.previous_secret if rotating else None,
            previous_secret_until_ms=endpoint.previous_secret_until_ms if rotating else None,
        )

    async def rotate_secret(
        self,
        tenant_id: str,
        endpoint_id: str,
        *,
        grace_seconds: int = DEFAULT_GRACE_SECONDS,
        secret: str | None = None,
    ) -> Endpoint:
        """A new secret (``secret``, or a generated one); the current one keeps signing
        beside it for ``grace_seconds``, so receivers can switch without a failed delivery.
        A rotation within the grace window of the one before retires the oldest secret."""
        if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
            raise ValidationFailed(
                f"grace_seconds must be in 0..{MAX_GRACE_SECONDS} (30 days)",
                field="grace_seconds",
            )
        now = self.clock.now_ms()

        def work(uow: UnitOfWork) -> Endpoint:
            current = uow.endpoints.get(tenant_id, endpoint_id)
            if current is None:
                raise NotFound(f"no endpoint {endpoint_id!r}")
            new = (
                validate_secret(secret, current.dialect)
                if secret is not None
                else generate_secret(current.dialect)
            )
            if new == current.secret:
                raise ValidationFailed("the new secret is the current one", field="secret")
            updated = dataclasses.replace(
                current,
                secret=new,
                previous_secret=current.secret if grace_seconds else None,
                previous_secret_until_ms=now + grace_seconds * 1000 if grace_seconds else None,
                updated_at_ms=now,
                version=current.version + 1,
            )
            uow.endpoints.update(updated)
            return updated

        return await self.store.run(work)

    async def delete(self, tenant_id: str, endpoint_id: str) -> int:
        """Delete the endpoint and cancel what it still had to receive; return that count."""
        now = self.clock.now_ms()

        def work(uow: UnitOfWork) -> int:
            if uow.endpoints.get(tenant_id, endpoint_id) is None:
                raise NotFound(f"no endpoint {endpoint_id!r}")
            uow.endpoints.delete(tenant_id, endpoint_id, now)
            return uow.deliveries.cancel_open(tenant_id, endpoint_id, now)

        return await self.store.run(work)

    async def tenant_of(self, endpoint_id: str) -> str:
        """Whose endpoint this is; only operator tools with database access ask this."""
        tenant_id = await self.store.run(
            lambda uow: uow.endpoints.tenant_of(endpoint_id), write=False
        )
        if tenant_id is None:
            raise NotFound(f"no endpoint {endpoint_id!r}")
        return tenant_id

    async def _reachable(self, url: str) -> str:
        """Refuse a URL whose host resolves to an address the SSRF guard forbids. The
        senders check again on every new connection, on the address they connect to, so a
        name that resolves elsewhere later (or does not resolve yet) gets no further."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            await asyncio.wait_for(check_host(self.address_policy, host, port), RESOLVE_TIMEOUT_S)
        except RefusedAddress as exc:
            raise InvalidUrl(str(exc), field="url") from exc
        except (UnresolvableHost, TimeoutError):
            pass  # its DNS may not exist yet; every attempt is checked when it connects
        return url

    async def _subscriptions(
        self, tenant_id: str, event_types: Sequence[str] | None
    ) -> tuple[str, ...]:
        if event_types is None:
            return DEFAULT_SUBSCRIPTIONS
        if not event_types:
            raise ValidationFailed("event_types must name at least one type", field="event_types")
        if len(event_types) > MAX_EVENT_TYPES:
            raise ValidationFailed(
                f"at most {MAX_EVENT_TYPES} event types per endpoint", field="event_types"
            )
        names = tuple(dict.fromkeys(event_types))
        for i, name in enumerate(names):
            if await self.event_types.find(tenant_id, name) is None:
                raise ValidationFailed(f"unknown event type {name!r}", field=f"event_types.{i}")
        return names


def _description(text: str) -> str:
    if len(text) > 1000:
        raise ValidationFailed("description is longer than 1000 characters", field="description")
    return text


def _carries_over(secret: str, old: str, new: str) -> bool:
    """Whether a secret may keep serving when its endpoint changes dialect. Only between
    the two HMAC dialects: a bearer key travels in the clear, so no signing secret may
    become one, and an ed25519 private key is never to be shared with a receiver."""
    if {old, new} - {"standard", "hmac-hex"}:
        return False
    try:
        validate_secret(secret, new)
    except ValidationFailed:
        return False
    return True


def _headers(headers: Mapping[str, str], dialect: str, header_prefix: str) -> dict[str, str]:
    """The endpoint's own headers, none of which may be one its dialect signs with."""
    clean = validate_headers(headers)
    taken = signature_headers(dialect, header_prefix)
    for name in clean:
        if name.lower() in taken:
            raise ValidationFailed(
                f"header {name!r} is set by the {dialect} dialect and cannot be overridden",
                field="headers",
            )
    return clean


def _dialect(dialect: str) -> str:
    if dialect not in DIALECTS:
        raise ValidationFailed(f"dialect must be one of {list(DIALECTS)}", field="dialect")
    return dialect
