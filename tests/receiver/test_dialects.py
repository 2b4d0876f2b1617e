"""The ed25519, hmac-hex and bearer dialects, and checking keys when a verifier is built."""

from __future__ import annotations

import base64
import hashlib
import hmac
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from croupier.receiver import (
    MissingHeaderError,
    RedisDedupe,
    SignatureError,
    TimestampError,
    Verifier,
)
from croupier.receiver.testing import generate_ed25519_keypair, sign
from tests.receiver.support import (
    API_KEY,
    EVENT_ID,
    HEX_SECRET,
    NOW,
    SECRET,
    Clock,
    round_completed_body,
)

# Ed25519 (v1a) test vector of the Standard Webhooks reference libraries: the private seed,
# message and expected signature from their asymmetric signing test. The public key is
# derived from the seed below.
V1A_SEED = "VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk="
V1A_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
V1A_TS = 1614265330
V1A_BODY = b'{"test": 2432232314}'
V1A_SIGNATURE = (
    "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag=="
)


def public_key_of(private: Ed25519PrivateKey) -> str:
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "whpk_" + base64.b64encode(raw).decode()


def cryptography_signed(private: Ed25519PrivateKey, body: bytes, ts: int) -> dict[str, str]:
    signature = private.sign(f"{EVENT_ID}.{ts}.".encode() + body)
    return {
        "webhook-id": EVENT_ID,
        "webhook-timestamp": str(ts),
        "webhook-signature": "v1a," + base64.b64encode(signature).decode(),
    }


# ed25519 -------------------------------------------------------------------------------------


def test_the_published_v1a_vector_authenticates_with_the_derived_public_key() -> None:
    private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(V1A_SEED))
    verifier = Verifier("ed25519", public_key_of(private), now=lambda: V1A_TS)
    headers = {
        "webhook-id": V1A_ID,
        "webhook-timestamp": str(V1A_TS),
        "webhook-signature": V1A_SIGNATURE,
    }
    assert verifier.authenticate(headers, V1A_BODY).timestamp == V1A_TS
    with pytest.raises(SignatureError):
        verifier.authenticate(headers, V1A_BODY + b" ")


def test_a_body_signed_with_cryptography_verifies(clock: Clock) -> None:
    private = Ed25519PrivateKey.generate()
    body = round_completed_body()
    verifier = Verifier("ed25519", public_key_of(private), now=clock)
    event = verifier.verify(cryptography_signed(private, body, NOW), body)
    assert (event.id, event.type, event.timestamp) == (EVENT_ID, "round.completed", NOW)


def test_ed25519_refuses_a_tampered_body_and_another_key(clock: Clock) -> None:
    private = Ed25519PrivateKey.generate()
    body = round_completed_body()
    headers = cryptography_signed(private, body, NOW)
    with pytest.raises(SignatureError, match="no v1a signature"):
        Verifier("ed25519", public_key_of(private), now=clock).verify(headers, body + b"\n")
    other = Verifier("ed25519", public_key_of(Ed25519PrivateKey.generate()), now=clock)
    with pytest.raises(SignatureError):
        other.verify(headers, body)


def test_ed25519_accepts_any_of_several_public_keys_and_skips_v1_entries(clock: Clock) -> None:
    _, old_public = generate_ed25519_keypair()
    new_private, new_public = generate_ed25519_keypair()
    body = round_completed_body()
    headers = sign("ed25519", new_private, body, msg_id=EVENT_ID, timestamp=NOW)
    headers["webhook-signature"] = "v1,AAAA " + headers["webhook-signature"]
    verifier = Verifier("ed25519", secrets=[old_public, new_public], now=clock)
    assert verifier.verify(headers, body).id == EVENT_ID


def test_ed25519_with_only_v1_entries_has_no_v1a_signature(clock: Clock) -> None:
    _, public = generate_ed25519_keypair()
    body = round_completed_body()
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    with pytest.raises(SignatureError, match="webhook-signature has no v1a signature"):
        Verifier("ed25519", public, now=clock).verify(headers, body)


def test_ed25519_checks_the_timestamp(clock: Clock) -> None:
    private, public = generate_ed25519_keypair()
    body = round_completed_body()
    headers = sign("ed25519", private, body, msg_id=EVENT_ID, timestamp=NOW - 301)
    with pytest.raises(TimestampError):
        Verifier("ed25519", public, now=clock).verify(headers, body)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (SECRET, "whsec_ secret, which belongs to the standard dialect"),
        ("whsk_" + base64.b64encode(bytes(32)).decode(), "private signing key"),
        (base64.b64encode(bytes(32)).decode(), "must start with whpk_"),
        ("whpk_" + base64.b64encode(bytes(31)).decode(), "32-byte public key"),
        ("whpk_%%%notbase64", "32-byte public key"),
    ],
)
def test_ed25519_refuses_keys_that_are_not_whpk_public_keys(key: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        Verifier("ed25519", key)
    assert key not in str(caught.value)


def test_without_cryptography_ed25519_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, public = generate_ed25519_keypair()
    monkeypatch.setitem(sys.modules, "cryptography.exceptions", None)
    with pytest.raises(ImportError, match=r'pip install "croupier\[receiver-ed25519\]"'):
        Verifier("ed25519", public)


def test_without_redis_redis_dedupe_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError, match=r'pip install "croupier\[receiver-redis\]"'):
        RedisDedupe("redis://127.0.0.1:6379/0")


# hmac-hex ------------------------------------------------------------------------------------


def hex_headers(
    body: bytes, *, secret: str = HEX_SECRET, ts: int = NOW, prefix: str = "Croupier"
) -> dict[str, str]:
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "webhook-id": EVENT_ID,
        f"X-{prefix}-Signature": f"sha256={digest}",
        f"X-{prefix}-Timestamp": str(ts),
    }


def test_hmac_hex_verifies_a_hex_signature_over_timestamp_and_body(clock: Clock) -> None:
    body = round_completed_body()
    event = Verifier("hmac-hex", HEX_SECRET, now=clock).verify(hex_headers(body), body)
    assert (event.id, event.timestamp) == (EVENT_ID, NOW)


def test_hmac_hex_keys_with_the_whole_secret_string_prefix_included(clock: Clock) -> None:
    body = round_completed_body()
    headers = hex_headers(body, secret=SECRET)
    assert Verifier("hmac-hex", SECRET, now=clock).verify(headers, body).id == EVENT_ID
    decoded_key = base64.b64decode(SECRET.removeprefix("whsec_"))
    digest = hmac.new(decoded_key, f"{NOW}.".encode() + body, hashlib.sha256).hexdigest()
    headers["X-Croupier-Signature"] = f"sha256={digest}"
    with pytest.raises(SignatureError):
        Verifier("hmac-hex", SECRET, now=clock).verify(headers, body)


def test_hmac_hex_uses_the_configured_header_prefix_in_any_case(clock: Clock) -> None:
    body = round_completed_body()
    headers = {k.lower(): v for k, v in hex_headers(body, prefix="Example").items()}
    verifier = Verifier("hmac-hex", HEX_SECRET, header_prefix="Example", now=clock)
    assert verifier.verify(headers, body).id == EVENT_ID
    with pytest.raises(MissingHeaderError, match="missing header X-Croupier-Signature"):
        Verifier("hmac-hex", HEX_SECRET, now=clock).verify(headers, body)


def test_hmac_hex_accepts_any_comma_separated_entry_during_a_rotation(clock: Clock) -> None:
    body = round_completed_body()
    headers = sign(
        "hmac-hex", ["old-secret-value", HEX_SECRET], body, msg_id=EVENT_ID, timestamp=NOW
    )
    assert headers["X-Croupier-Signature"].count("sha256=") == 2
    assert Verifier("hmac-hex", HEX_SECRET, now=clock).verify(headers, body).id == EVENT_ID
    verifier = Verifier("hmac-hex", secrets=["another", "old-secret-value"], now=clock)
    assert verifier.verify(headers, body).id == EVENT_ID


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("sha256", "X-Croupier-Signature has no sha256 signature"),
        ("sha256=xyz", "X-Croupier-Signature has no sha256 signature"),
        ("sha1=" + "0" * 40, "X-Croupier-Signature has no sha256 signature"),
        ("v1," + base64.b64encode(bytes(32)).decode(), "has no sha256 signature"),
        ("sha256=" + "0" * 64, "no sha256 signature in X-Croupier-Signature matches"),
    ],
)
def test_hmac_hex_refuses_malformed_entries(clock: Clock, header: str, message: str) -> None:
    body = round_completed_body()
    headers = {**hex_headers(body), "X-Croupier-Signature": header}
    with pytest.raises(SignatureError, match=message):
        Verifier("hmac-hex", HEX_SECRET, now=clock).verify(headers, body)


@pytest.mark.parametrize("missing", ["X-Croupier-Signature", "X-Croupier-Timestamp"])
def test_hmac_hex_names_a_missing_header(clock: Clock, missing: str) -> None:
    body = round_completed_body()
    headers = hex_headers(body)
    del headers[missing]
    with pytest.raises(MissingHeaderError, match=f"missing header {missing}"):
        Verifier("hmac-hex", HEX_SECRET, now=clock).verify(headers, body)


def test_hmac_hex_refuses_a_stale_timestamp_and_a_huge_header(clock: Clock) -> None:
    body = round_completed_body()
    verifier = Verifier("hmac-hex", HEX_SECRET, now=clock)
    with pytest.raises(TimestampError, match="3600 s away"):
        verifier.verify(hex_headers(body, ts=NOW - 3600), body)
    huge = {**hex_headers(body), "X-Croupier-Signature": "sha256=" + "0" * 9000}
    with pytest.raises(SignatureError, match="signature header too long"):
        verifier.verify(huge, body)


def test_hmac_hex_flat_data_without_webhook_id_is_missing_its_id(clock: Clock) -> None:
    body = b'{"campaign_id":"c1","player_id":"p1","event_type":"PLAYER_OPTED_IN"}'
    headers = hex_headers(body)
    verifier = Verifier("hmac-hex", HEX_SECRET, now=clock)
    assert verifier.verify(headers, body).id == EVENT_ID
    del headers["webhook-id"]
    with pytest.raises(MissingHeaderError, match="missing header webhook-id"):
        verifier.verify(headers, body)


# bearer --------------------------------------------------------------------------------------


def test_bearer_accepts_the_configured_key_without_any_timestamp() -> None:
    body = round_completed_body()
    headers = {"Authorization": f"Bearer {API_KEY}", "webhook-id": EVENT_ID}
    # A clock a year off changes nothing: bearer has no timestamp to check.
    event = Verifier("bearer", API_KEY, now=lambda: NOW + 365 * 86400).verify(headers, body)
    assert (event.id, event.timestamp) == (EVENT_ID, None)


def test_bearer_accepts_any_of_several_keys_and_any_scheme_case() -> None:
    body = round_completed_body()
    verifier = Verifier("bearer", secrets=["ck_old_key_value", API_KEY])
    for key in ("ck_old_key_value", API_KEY):
        assert verifier.verify({"authorization": f"bearer {key}"}, body).id == EVENT_ID


@pytest.mark.parametrize(
    ("authorization", "error", "message"),
    [
        (f"Bearer {API_KEY}x", SignatureError, "matches no configured key"),
        (f"Bearer {API_KEY[:-1]}", SignatureError, "matches no configured key"),
        ("Bearer ", SignatureError, "not a Bearer token"),
        ("   ", MissingHeaderError, "missing header Authorization"),
        (f"Basic {API_KEY}", SignatureError, "not a Bearer token"),
        (API_KEY, SignatureError, "not a Bearer token"),
        ("Bearer " + "k" * 9000, SignatureError, "authorization header too long"),
    ],
)
def test_bearer_refuses_a_wrong_or_malformed_authorization(
    authorization: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as caught:
        Verifier("bearer", API_KEY).verify({"Authorization": authorization}, b"{}")
    assert API_KEY not in str(caught.value)


def test_bearer_names_the_missing_authorization_header() -> None:
    with pytest.raises(MissingHeaderError, match="missing header Authorization"):
        Verifier("bearer", API_KEY).verify({"webhook-id": EVENT_ID}, round_completed_body())


def test_only_bearer_fails_with_401() -> None:
    assert Verifier("bearer", API_KEY).failure_status == 401
    assert Verifier("standard", SECRET).failure_status == 400
    assert Verifier("hmac-hex", HEX_SECRET).failure_status == 400


# keys at construction ------------------------------------------------------------------------


def test_exactly_one_of_secret_and_secrets_is_required() -> None:
    with pytest.raises(ValueError, match="exactly one of secret= or secrets="):
        Verifier("standard")
    with pytest.raises(ValueError, match="exactly one of secret= or secrets="):
        Verifier("standard", SECRET, secrets=[SECRET])


def test_a_lone_string_passed_as_secrets_is_refused() -> None:
    with pytest.raises(TypeError, match="give a single key as secret="):
        Verifier("standard", secrets=SECRET)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("whsec_not*base64*at*all", "secret is not whsec_ followed by base64"),
        ("whsec_" + base64.b64encode(bytes(16)).decode(), "24 to 64 bytes"),
        ("whsec_" + base64.b64encode(bytes(65)).decode(), "24 to 64 bytes"),
        ("whsec_", "24 to 64 bytes"),
        ("whpk_" + base64.b64encode(bytes(32)).decode(), "ed25519 key"),
    ],
)
def test_standard_refuses_malformed_secrets_without_echoing_them(key: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        Verifier("standard", key)
    assert key not in str(caught.value)
    assert key.removeprefix("whsec_") not in str(caught.value) or not key.removeprefix("whsec_")


def test_the_position_of_a_bad_key_among_several_is_named() -> None:
    with pytest.raises(ValueError, match=r"secrets\[1\] is not whsec_ followed by base64"):
        Verifier("standard", secrets=[SECRET, "whsec_!!"])


@pytest.mark.parametrize(
    ("dialect", "key", "message"),
    [
        ("hmac-hex", "", "is empty"),
        ("hmac-hex", "whsk_" + base64.b64encode(bytes(32)).decode(), "ed25519 key"),
        ("bearer", "", "non-empty"),
        ("bearer", "two words", "without spaces"),
        ("bearer", "whsk_" + base64.b64encode(bytes(32)).decode(), "private signing key"),
    ],
)
def test_hmac_hex_and_bearer_refuse_unusable_keys(dialect: str, key: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Verifier(dialect, key)  # type: ignore[arg-type]


def test_unknown_dialects_negative_tolerances_and_odd_prefixes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown dialect 'hmac'"):
        Verifier("hmac", SECRET)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tolerance_s"):
        Verifier("standard", SECRET, tolerance_s=-1)
    with pytest.raises(ValueError, match="header_prefix"):
        Verifier("hmac-hex", HEX_SECRET, header_prefix="Bad Prefix:")
