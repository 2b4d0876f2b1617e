"""Endpoints as values, and the rules their fields must follow."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from croupier.domain.errors import InvalidUrl, ValidationFailed
from croupier.domain.health import CLOSED, DEFAULT_BREAKER, Breaker, BreakerSettings
from croupier.domain.retry import DEFAULT_SCHEDULE

DEFAULT_TIMEOUT_MS = 10_000
MAX_TIMEOUT_MS = 60_000
MIN_TIMEOUT_MS = 100
MAX_URL_LENGTH = 2048
MAX_HEADERS = 20
MAX_ENDPOINT_IN_FLIGHT = 1024

#: Headers croupier sets itself; an endpoint may not override them.
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "user-agent",
        "connection",
        "transfer-encoding",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-trace-id",
        "traceparent",
    }
)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True)
class Endpoint:
    """A receiver URL with its subscription filter, signing and retry settings."""

    id: str
    tenant_id: str
    url: str
    secret: str
    event_types: tuple[str, ...]
    headers: Mapping[str, str]
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    retry_schedule: tuple[int, ...] = DEFAULT_SCHEDULE
    ordered: bool = False
    description: str = ""
    disabled: bool = False
    disabled_reason: str | None = None
    dialect: str = "standard"
    #: ``X-{header_prefix}-Signature`` and ``-Timestamp`` in the ``hmac-hex`` dialect.
    header_prefix: str = "Croupier"
    #: ``envelope`` (the default body) or ``data`` (the event's fields, flat).
    format: str = "envelope"
    #: The secret before the last rotation, signing beside ``secret`` until the time below.
    previous_secret: str | None = None
    previous_secret_until_ms: int | None = None
    created_at_ms: int = 0
    updated_at_ms: int = 0
    version: int = 1
    #: Deliveries per second at most (a token bucket); None: no limit.
    rate_limit_per_s: float | None = None
    #: Concurrent requests at most; None: the worker's ``endpoint_max_in_flight``.
    max_in_flight: int | None = None
    breaker_settings: BreakerSettings = DEFAULT_BREAKER
    #: Health, kept by the workers: the breaker, and since when every attempt has failed.
    breaker: Breaker = CLOSED
    failing_since_ms: int | None = None
    last_success_at_ms: int | None = None
    disabled_at_ms: int | None = None

    def signing_secrets(self, now_ms: int) -> tuple[str, ...]:
        """The secrets a delivery made at ``now_ms`` is signed with, newest first."""
        if self.previous_secret is not None and now_ms < (self.previous_secret_until_ms or 0):
            return (self.secret, self.previous_secret)
        return (self.secret,)


FORMATS = ("envelope", "data")


def validate_format(body_format: str) -> str:
    if body_format not in FORMATS:
        raise ValidationFailed(f"format must be one of {list(FORMATS)}", field="format")
    return body_format


def validate_url(url: str) -> str:
    """Accept an absolute http(s) URL with a host and no credentials in it."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidUrl(f"url is longer than {MAX_URL_LENGTH} characters", field="url")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise InvalidUrl("url must not contain whitespace or control characters", field="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidUrl(f"url is malformed: {exc}", field="url") from exc
    if parts.scheme not in ("http", "https"):
        raise InvalidUrl("url must use http or https", field="url")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidUrl("url must not carry credentials; use headers instead", field="url")
    if not parts.hostname:
        raise InvalidUrl("url has no host", field="url")
    if port == 0:
        raise InvalidUrl("url port must be in 1..65535", field="url")
    if parts.fragment:
        raise InvalidUrl("url must not have a #fragment", field="url")
    return url


def validate_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Custom headers: valid names and values, at most 20, none that croupier sets itself."""
    if len(headers) > MAX_HEADERS:
        raise ValidationFailed(f"at most {MAX_HEADERS} headers", field="headers")
    clean: dict[str, str] = {}
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValidationFailed(f"header name {name!r} is not a valid token", field="headers")
        if name.lower() in RESERVED_HEADERS:
            raise ValidationFailed(
                f"header {name!r} is set by croupier and cannot be overridden", field="headers"
            )
        if len(value) > 4096 or any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
            raise ValidationFailed(
                f"header {name!r} has a control character or is over 4096 characters",
                field="headers",
            )
        clean[name] = value
    return clean


def validate_timeout(timeout_ms: int) -> int:
    if not MIN_TIMEOUT_MS <= timeout_ms <= MAX_TIMEOUT_MS:
        raise ValidationFailed(
            f"timeout_ms must be in {MIN_TIMEOUT_MS}..{MAX_TIMEOUT_MS}", field="timeout_ms"
        )
    return timeout_ms


def validate_max_in_flight(max_in_flight: int | None) -> int | None:
    if max_in_flight is None:
        return None
    if isinstance(max_in_flight, bool) or not 1 <= max_in_flight <= MAX_ENDPOINT_IN_FLIGHT:
        raise ValidationFailed(
            f"max_in_flight must be in 1..{MAX_ENDPOINT_IN_FLIGHT}, or null for the default",
            field="max_in_flight",
        )
    return max_in_flight
