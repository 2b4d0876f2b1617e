"""The :class:`Verifier`: checks that a request came from croupier, and reads its event.

One verifier serves one endpoint dialect. Keys are parsed and checked when the verifier is
built, so a mistyped secret fails at start-up rather than on the first delivery.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple, TypeAlias, get_args

from croupier.receiver.errors import (
    MissingHeaderError,
    SignatureError,
    TimestampError,
)
from croupier.receiver.event import Event, parse_event

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "DIALECTS",
    "MAX_HEADER_CHARS",
    "MAX_SIGNATURES",
    "Authenticated",
    "Dialect",
    "HeadersLike",
    "Verifier",
]

Dialect: TypeAlias = Literal["standard", "ed25519", "hmac-hex", "bearer"]
DIALECTS: tuple[str, ...] = get_args(Dialect)

#: Anything that yields header names and values: a dict, a list of pairs, or a framework's
#: header object (a case-insensitive Mapping, or an iterable of pairs).
HeadersLike: TypeAlias = Mapping[str, str] | Iterable[tuple[str, str]]

#: Longest signature, authorization or id header considered; longer ones are refused
#: before any work is done on them.
MAX_HEADER_CHARS = 8192
#: Most well-formed signatures of the right version tried per request.
MAX_SIGNATURES = 16

_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
_PUBLIC_PREFIX = "whpk_"
_PRIVATE_PREFIX = "whsk_"
# Twelve digits reach past the year 9999; anything longer cannot be a current time.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_HEADER_PREFIX = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")
_STANDARD_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature"})
_INSTALL_ED25519 = 'pip install "croupier[receiver-ed25519]"'


class Authenticated(NamedTuple):
    """What a request that passed the signature (or token) check carries."""

    #: The ``webhook-id`` header, if sent (always, for standard and ed25519).
    webhook_id: str | None
    #: The signed timestamp; ``None`` for bearer, which has none.
    timestamp: int | None


class Verifier:
    """Verifies croupier's deliveries for one endpoint.

    ``dialect`` is the endpoint's signing dialect:

    - ``"standard"`` (default): Standard Webhooks v1, keys are ``whsec_`` secrets.
    - ``"ed25519"``: Standard Webhooks v1a, keys are ``whpk_`` public keys.
    - ``"hmac-hex"``: ``X-{header_prefix}-Signature: sha256=<hex>`` over
      ``"{timestamp}.{body}"``, keyed with the secret's UTF-8 bytes as given.
    - ``"bearer"``: ``Authorization: Bearer <key>``; no signature, no timestamp.

    Give exactly one of ``secret`` (one key) or ``secrets`` (several, e.g. the old and the
    new one while a secret is being rotated; any one matching is enough). ``tolerance_s`` is
    how far the signed timestamp may be from ``now()``, in either direction. ``now`` returns
    Unix seconds; tests inject their own clock.

    Raises ``ValueError`` for a malformed key (the message never repeats the key) and
    ``ImportError`` naming the extra to install when ed25519 support is missing.
    """

    __slots__ = (
        "_dialect",
        "_header_prefix",
        "_hmac_keys",
        "_invalid_signature",
        "_now",
        "_public_keys",
        "_token_digests",
        "_tolerance_s",
    )

    def __init__(
        self,
        dialect: Dialect = "standard",
        secret: str | None = None,
        *,
        secrets: Sequence[str] = (),
        tolerance_s: int = 300,
        header_prefix: str = "Croupier",
        now: Callable[[], float] = time.time,
    ) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}; expected one of {', '.join(DIALECTS)}")
        keys = _one_of(secret, secrets)
        if isinstance(tolerance_s, bool) or not isinstance(tolerance_s, int) or tolerance_s < 0:
            raise ValueError("tolerance_s must be a non-negative whole number of seconds")
        if not _HEADER_PREFIX.fullmatch(header_prefix):
            raise ValueError("header_prefix must be letters and digits, optionally joined by '-'")
        self._dialect: Dialect = dialect
        self._tolerance_s = tolerance_s
        self._header_prefix = header_prefix
        self._now = now
        self._hmac_keys: tuple[bytes, ...] = ()
        self._public_keys: tuple[Ed25519PublicKey, ...] = ()
        self._token_digests: tuple[bytes, ...] = ()
        self._invalid_signature: type[Exception] = Exception
        labels = ["secret"] if secret is not None else [f"secrets[{i}]" for i in range(len(keys))]
        if dialect == "standard":
            self._hmac_keys = tuple(_standard_key(k, n) for k, n in zip(keys, labels, strict=True))
        elif dialect == "ed25519":
            public_key_type, self._invalid_signature = _load_ed25519()
            self._public_keys = tuple(
                public_key_type.from_public_bytes(_ed25519_key(k, n))
                for k, n in zip(keys, labels, strict=True)
            )
        elif dialect == "hmac-hex":
            self._hmac_keys = tuple(_hex_key(k, n) for k, n in zip(keys, labels, strict=True))
        else:
            # Comparing fixed-length digests keeps the comparison's time independent of
            # the length of the key as well as of its content.
            self._token_digests = tuple(
                hashlib.sha256(_bearer_key(k, n)).digest()
                for k, n in zip(keys, labels, strict=True)
            )

    @property
    def dialect(self) -> Dialect:
        """The signing dialect this verifier checks."""
        return self._dialect

    @property
    def tolerance_s(self) -> int:
        """How far, in seconds and in either direction, a signed timestamp may be from now."""
        return self._tolerance_s

    @property
    def header_prefix(self) -> str:
        """The ``{Prefix}`` of the hmac-hex headers ``X-{Prefix}-Signature``/``-Timestamp``."""
        return self._header_prefix

    @property
    def failure_status(self) -> int:
        """The HTTP status to answer a failed verification with: 401 for bearer, else 400."""
        return 401 if self._dialect == "bearer" else 400

    def __repr__(self) -> str:
        keys = len(self._hmac_keys) + len(self._public_keys) + len(self._token_digests)
        return f"Verifier(dialect={self._dialect!r}, keys={keys}, tolerance_s={self._tolerance_s})"

    def verify(self, headers: HeadersLike, raw_body: bytes | str) -> Event:
        """Check one request and return its event.

        ``raw_body`` must be the body exactly as received: the signature covers its bytes,
        and JSON that was parsed and serialised again is not the same bytes. Header names are
        matched case-insensitively; when a header is repeated, the first value is used.

        Raises a :class:`~croupier.receiver.errors.VerificationError` subclass, and nothing
        else, for any request it refuses.
        """
        body = _body_bytes(raw_body)
        webhook_id, timestamp = self._authenticate(headers, body)
        return parse_event(body, header_id=webhook_id, timestamp=timestamp)

    def authenticate(self, headers: HeadersLike, raw_body: bytes | str) -> Authenticated:
        """Only the authenticity checks of :meth:`verify`: headers, timestamp, signature.

        For bodies that are not croupier events (a test vector, a custom payload). Raises
        the same errors as :meth:`verify`, except :class:`PayloadError`.
        """
        return self._authenticate(headers, _body_bytes(raw_body))

    def _authenticate(self, headers: HeadersLike, body: bytes) -> Authenticated:
        if self._dialect == "standard":
            return self._verify_standard(headers, body)
        if self._dialect == "ed25519":
            return self._verify_ed25519(headers, body)
        if self._dialect == "hmac-hex":
            return self._verify_hmac_hex(headers, body)
        return self._verify_bearer(headers, body)

    def _standard_parts(self, headers: HeadersLike) -> tuple[str, int, bytes, str]:
        found = _find_headers(headers, _STANDARD_HEADERS)
        msg_id = _require(found, "webhook-id")
        ts_text = _require(found, "webhook-timestamp")
        signature = _require(found, "webhook-signature")
        _check_length(msg_id, "webhook-id header too long")
        _check_length(signature, "signature header too long")
        timestamp = self._check_timestamp(ts_text, "webhook-timestamp")
        prefix = _utf8(msg_id) + b"." + ts_text.encode("ascii") + b"."
        return msg_id, timestamp, prefix, signature

    def _verify_standard(self, headers: HeadersLike, body: bytes) -> Authenticated:
        msg_id, timestamp, prefix, header = self._standard_parts(headers)
        signed = prefix + body
        expected = [hmac.digest(key, signed, "sha256") for key in self._hmac_keys]
        # The usual request: a signature written exactly as a sender writes it. Comparing
        # the text (in constant time) saves decoding each entry; anything else, unpadded
        # base64 say, takes the full path below, which has the last word.
        entries = header.split()
        if len(entries) <= MAX_SIGNATURES and header.isascii():
            written = ["v1," + base64.b64encode(e).decode() for e in expected]
            for entry in entries:
                for text in written:
                    if hmac.compare_digest(entry, text):
                        return Authenticated(msg_id, timestamp)
        given = _versioned_signatures(header, "v1", 32)
        if not any(hmac.compare_digest(e, g) for g in given for e in expected):
            raise SignatureError("no v1 signature in webhook-signature matches")
        return Authenticated(msg_id, timestamp)

    def _verify_ed25519(self, headers: HeadersLike, body: bytes) -> Authenticated:
        msg_id, timestamp, prefix, header = self._standard_parts(headers)
        given = _versioned_signatures(header, "v1a", 64)
        signed = prefix + body
        for key in self._public_keys:
            for signature in given:
                try:
                    key.verify(signature, signed)
                except self._invalid_signature:
                    continue
                return Authenticated(msg_id, timestamp)
        raise SignatureError("no v1a signature in webhook-signature matches")

    def _verify_hmac_hex(self, headers: HeadersLike, body: bytes) -> Authenticated:
        sig_name = f"X-{self._header_prefix}-Signature"
        ts_name = f"X-{self._header_prefix}-Timestamp"
        found = _find_headers(headers, {sig_name.lower(), ts_name.lower(), "webhook-id"})
        header = _require(found, sig_name)
        ts_text = _require(found, ts_name)
        _check_length(header, "signature header too long")
        msg_id = _optional_id(found)
        timestamp = self._check_timestamp(ts_text, ts_name)
        given: list[bytes] = []
        for entry in header.split(","):
            algorithm, sep, value = entry.strip().partition("=")
            value = value.lower()
            if sep and algorithm.lower() == "sha256" and _HEX_SHA256.fullmatch(value):
                given.append(bytes.fromhex(value))
                if len(given) == MAX_SIGNATURES:
                    break
        if not given:
            raise SignatureError(f"{sig_name} has no sha256 signature")
        signed = ts_text.encode("ascii") + b"." + body
        expected = [hmac.digest(key, signed, "sha256") for key in self._hmac_keys]
        if not any(hmac.compare_digest(e, g) for g in given for e in expected):
            raise SignatureError(f"no sha256 signature in {sig_name} matches")
        return Authenticated(msg_id, timestamp)

    def _verify_bearer(self, headers: HeadersLike, body: bytes) -> Authenticated:
        found = _find_headers(headers, {"authorization", "webhook-id"})
        authorization = _require(found, "Authorization")
        _check_length(authorization, "authorization header too long")
        msg_id = _optional_id(found)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise SignatureError("Authorization is not a Bearer token")
        digest = hashlib.sha256(_utf8(token)).digest()
        # No early exit: the time taken does not tell which key, if any, matched.
        matched = False
        for expected in self._token_digests:
            matched |= hmac.compare_digest(expected, digest)
        if not matched:
            raise SignatureError("bearer token matches no configured key")
        return Authenticated(msg_id, None)

    def _check_timestamp(self, text: str, name: str) -> int:
        if not _TIMESTAMP.fullmatch(text):
            raise TimestampError(f"{name} is not a Unix time in whole seconds")
        timestamp = int(text)
        skew = abs(timestamp - self._now())
        if skew > self._tolerance_s:
            raise TimestampError(
                f"timestamp {timestamp} is {math.ceil(skew)} s away from now; "
                f"tolerance is {self._tolerance_s} s",
                timestamp=timestamp,
            )
        return timestamp


def _one_of(secret: str | None, secrets: Sequence[str]) -> list[str]:
    if isinstance(secrets, str):
        # A lone string is a Sequence[str] of characters: a silent, dangerous mistake.
        raise TypeError("secrets must be a list of keys; give a single key as secret=")
    if (secret is None) == (not secrets):
        raise ValueError("give exactly one of secret= or secrets=")
    keys = [secret] if secret is not None else list(secrets)
    for key in keys:
        if not isinstance(key, str):
            raise TypeError("keys must be str")
    return keys


def _standard_key(secret: str, label: str) -> bytes:
    if secret.startswith((_PUBLIC_PREFIX, _PRIVATE_PREFIX)):
        raise ValueError(
            f"{label} is an ed25519 key (whpk_/whsk_); the standard dialect takes a whsec_ secret"
        )
    key = _b64decode(secret.removeprefix(_SECRET_PREFIX))
    if key is None:
        raise ValueError(f"{label} is not whsec_ followed by base64")
    if not 24 <= len(key) <= 64:
        raise ValueError(f"{label} must decode to 24 to 64 bytes of key")
    return key


def _ed25519_key(secret: str, label: str) -> bytes:
    if secret.startswith(_PRIVATE_PREFIX):
        raise ValueError(
            f"{label} is a private signing key (whsk_); the verifier takes the public key (whpk_)"
        )
    if secret.startswith(_SECRET_PREFIX):
        raise ValueError(
            f"{label} is a whsec_ secret, which belongs to the standard dialect; "
            "ed25519 takes whpk_ public keys"
        )
    if not secret.startswith(_PUBLIC_PREFIX):
        raise ValueError(f"{label} must start with whpk_ (an ed25519 public key)")
    key = _b64decode(secret.removeprefix(_PUBLIC_PREFIX))
    if key is None or len(key) != 32:
        raise ValueError(f"{label} must be whpk_ followed by base64 of a 32-byte public key")
    return key


def _hex_key(secret: str, label: str) -> bytes:
    if secret.startswith((_PUBLIC_PREFIX, _PRIVATE_PREFIX)):
        raise ValueError(f"{label} is an ed25519 key (whpk_/whsk_); hmac-hex takes a shared secret")
    if not secret:
        raise ValueError(f"{label} is empty")
    try:
        # The provider guide keys the HMAC with the secret string itself, prefix and all.
        return secret.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{label} is not valid text") from None


def _bearer_key(secret: str, label: str) -> bytes:
    if secret.startswith(_PRIVATE_PREFIX):
        raise ValueError(f"{label} is a private signing key (whsk_), not an API key")
    if not secret or any(c.isspace() or not c.isprintable() for c in secret):
        raise ValueError(f"{label} must be non-empty, without spaces or control characters")
    return _utf8(secret)


def _load_ed25519() -> tuple[type[Ed25519PublicKey], type[Exception]]:
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError as exc:
        raise ImportError(
            f"the ed25519 dialect needs the cryptography package: {_INSTALL_ED25519}"
        ) from exc
    return Ed25519PublicKey, InvalidSignature


def _b64decode(text: str) -> bytes | None:
    """Strict standard base64, tolerating missing padding; ``None`` if it is not base64."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _versioned_signatures(header: str, version: str, size: int) -> list[bytes]:
    """The well-formed ``{version},<base64>`` entries of a webhook-signature header."""
    given: list[bytes] = []
    for entry in header.split():
        entry_version, sep, value = entry.partition(",")
        if not sep or entry_version != version:
            continue
        signature = _b64decode(value)
        if signature is not None and len(signature) == size:
            given.append(signature)
            if len(given) == MAX_SIGNATURES:
                break
    if not given:
        raise SignatureError(f"webhook-signature has no {version} signature")
    return given


def _find_headers(headers: HeadersLike, wanted: Iterable[str]) -> dict[str, str]:
    names = frozenset(wanted)
    if isinstance(headers, Mapping):
        # The common case first: a dict with lower-case names, or a framework's
        # case-insensitive headers. Any name not found so: the scan below decides.
        direct: dict[str, str] = {}
        for name in names:
            value = headers.get(name)
            if value is None:
                break
            direct[name] = _text(value).strip()
        else:
            return direct
    items: Iterable[tuple[str, str]] = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, str] = {}
    for name, value in items:
        key = _text(name).lower()
        if key in names and key not in found:
            found[key] = _text(value).strip()
    return found


def _text(value: str | bytes) -> str:
    # Raw ASGI/WSGI headers may arrive as bytes; HTTP header bytes are Latin-1.
    return value if isinstance(value, str) else bytes(value).decode("latin-1")


def _require(found: Mapping[str, str], name: str) -> str:
    value = found.get(name.lower())
    if not value:
        raise MissingHeaderError(name)
    return value


def _optional_id(found: Mapping[str, str]) -> str | None:
    msg_id = found.get("webhook-id") or None
    if msg_id is not None:
        _check_length(msg_id, "webhook-id header too long")
    return msg_id


def _check_length(value: str, message: str) -> None:
    if len(value) > MAX_HEADER_CHARS:
        raise SignatureError(message)


def _utf8(text: str) -> bytes:
    # Lone surrogates cannot have been sent over HTTP; encode them anyway so that such
    # input fails the signature check instead of raising UnicodeEncodeError.
    return text.encode("utf-8", "surrogatepass")


def _body_bytes(raw_body: bytes | str) -> bytes:
    if isinstance(raw_body, str):
        return _utf8(raw_body)
    return bytes(raw_body)
