from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from standardwebhooks.webhooks import Webhook

from croupier.dispatch.courier import EndpointSpec, _Signers
from croupier.domain.endpoints import Endpoint
from croupier.domain.envelope import render_data
from croupier.domain.errors import ValidationFailed
from croupier.domain.events import Event
from croupier.domain.signing import (
    StandardWebhooksSigner,
    generate_secret,
    public_key,
    signature_headers,
    signer_for,
    validate_header_prefix,
    validate_secret,
)

# The published Standard Webhooks v1 test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_standard_webhooks_test_vector_signs_as_published() -> None:
    headers = StandardWebhooksSigner([VECTOR_SECRET]).sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    assert headers == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": VECTOR_SIGNATURE,
    }


def test_a_changed_byte_changes_the_signature() -> None:
    signer = StandardWebhooksSigner([VECTOR_SECRET])
    tampered = signer.sign(VECTOR_ID, VECTOR_TS, b'{"test": 2432232315}')
    assert tampered["webhook-signature"] != VECTOR_SIGNATURE


def test_several_secrets_give_one_signature_each_separated_by_spaces() -> None:
    other = generate_secret()
    headers = StandardWebhooksSigner([other, VECTOR_SECRET]).sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    parts = headers["webhook-signature"].split(" ")
    assert len(parts) == 2
    assert parts[1] == VECTOR_SIGNATURE


def test_the_reference_library_verifies_what_croupier_signs() -> None:
    secret = generate_secret()
    body = b'{"id":"evt_1","data":{"x":1}}'
    import time

    ts = int(time.time())
    headers = StandardWebhooksSigner([secret]).sign("evt_1", ts, body)
    Webhook(secret).verify(body, headers)


def test_generated_secrets_are_whsec_and_24_random_bytes() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    assert generate_secret() != secret


@pytest.mark.parametrize(
    "secret",
    ["plain", "whsec_", "whsec_!!notbase64!!", "whsec_" + base64.b64encode(b"x" * 8).decode()],
)
def test_a_malformed_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValidationFailed):
        validate_secret(secret)


def test_an_unknown_dialect_is_refused() -> None:
    with pytest.raises(ValidationFailed):
        signer_for("morse", [VECTOR_SECRET])


# -- every dialect's signer, on fixed inputs ----------------------------------------------

# RFC 8032, section 7.1, TEST 1: an Ed25519 seed and the public key it derives.
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIGNING_KEY = "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
RFC_PUBLIC_KEY = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
#: The vector's message signed with the RFC seed (Ed25519 signatures are deterministic).
RFC_VECTOR_SIGNATURE = (
    "v1a,fldxM4gAKugP6nnt1hdz3sgGfZ6d99nzrMFnZOELIxbzEHoVmAb2ADpkJK7zgPePmPsle0zV9jSeGlHFG2NVAw=="
)
#: HMAC-SHA256 over "1614265330." + VECTOR_BODY, keyed with the secret strings' bytes.
HEX_OF_VECTOR_SECRET = "2e37df5d4a028c51a7f3133d64ae1e300d2c2c900f1b1d49d4369ad2530f8964"
HEX_SECRET = "hex-secret-0123456789"
HEX_OF_HEX_SECRET = "cc0a84408d55d08d99e3b1fc8b51fad956385357382ed15c59f58826c67ee8f6"
VECTOR_SIGNED = f"{VECTOR_ID}.{VECTOR_TS}.".encode() + VECTOR_BODY


def whsk(raw: bytes) -> str:
    return "whsk_" + base64.b64encode(raw).decode()


def test_the_published_secrets_and_values_used_below_are_what_they_claim() -> None:
    assert whsk(RFC_SEED) == RFC_SIGNING_KEY
    assert "whpk_" + base64.b64encode(RFC_PUBLIC).decode() == RFC_PUBLIC_KEY
    expected = hmac.new(
        VECTOR_SECRET.encode(), f"{VECTOR_TS}.".encode() + VECTOR_BODY, hashlib.sha256
    ).hexdigest()
    assert expected == HEX_OF_VECTOR_SECRET


def test_signer_for_standard_signs_the_vector_and_puts_the_newest_secret_first() -> None:
    older = "whsec_" + base64.b64encode(b"o" * 24).decode()
    headers = signer_for("standard", [VECTOR_SECRET, older]).sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    second = base64.b64encode(hmac.digest(b"o" * 24, VECTOR_SIGNED, "sha256")).decode()
    assert headers == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": f"{VECTOR_SIGNATURE} v1,{second}",
    }


def test_signer_for_ed25519_signs_id_timestamp_and_body_verifiably_with_the_public_key() -> None:
    headers = signer_for("ed25519", [RFC_SIGNING_KEY]).sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    assert headers == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": RFC_VECTOR_SIGNATURE,
    }
    signature = base64.b64decode(RFC_VECTOR_SIGNATURE.removeprefix("v1a,"))
    Ed25519PublicKey.from_public_bytes(RFC_PUBLIC).verify(signature, VECTOR_SIGNED)


def test_an_ed25519_key_in_the_64_byte_form_signs_as_its_32_byte_seed() -> None:
    long_form = whsk(RFC_SEED + RFC_PUBLIC)
    headers = signer_for("ed25519", [long_form]).sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    assert headers["webhook-signature"] == RFC_VECTOR_SIGNATURE


def test_ed25519_with_two_keys_carries_two_v1a_signatures_newest_first() -> None:
    other_seed = bytes(range(32))
    headers = signer_for("ed25519", [whsk(other_seed), RFC_SIGNING_KEY]).sign(
        VECTOR_ID, VECTOR_TS, VECTOR_BODY
    )
    first, second = headers["webhook-signature"].split(" ")
    assert second == RFC_VECTOR_SIGNATURE
    other_public = Ed25519PrivateKey.from_private_bytes(other_seed).public_key()
    other_public.verify(base64.b64decode(first.removeprefix("v1a,")), VECTOR_SIGNED)


def test_signer_for_hmac_hex_signs_timestamp_dot_body_keyed_with_the_secret_string() -> None:
    headers = signer_for("hmac-hex", [VECTOR_SECRET]).sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    assert headers == {
        "webhook-id": VECTOR_ID,
        "X-Croupier-Timestamp": str(VECTOR_TS),
        "X-Croupier-Signature": f"sha256={HEX_OF_VECTOR_SECRET}",
    }


def test_hmac_hex_names_its_headers_after_the_prefix_and_joins_signatures_with_commas() -> None:
    signer = signer_for("hmac-hex", [HEX_SECRET, VECTOR_SECRET], header_prefix="Example")
    headers = signer.sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    assert headers == {
        "webhook-id": VECTOR_ID,
        "X-Example-Timestamp": str(VECTOR_TS),
        "X-Example-Signature": f"sha256={HEX_OF_HEX_SECRET},sha256={HEX_OF_VECTOR_SECRET}",
    }


def test_signer_for_bearer_sends_the_newest_key_alone_and_no_signature() -> None:
    signer = signer_for("bearer", ["new-bearer-key-0123456789", "old-bearer-key-0123456789"])
    assert signer.sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY) == {
        "webhook-id": VECTOR_ID,
        "Authorization": "Bearer new-bearer-key-0123456789",
    }


@pytest.mark.parametrize("dialect", ["standard", "ed25519", "hmac-hex", "bearer"])
def test_a_signer_without_any_secret_is_refused(dialect: str) -> None:
    with pytest.raises(ValueError, match="at least one secret"):
        signer_for(dialect, [])


# -- what secret each dialect takes -------------------------------------------------------


def whsec(n_bytes: int) -> str:
    return "whsec_" + base64.b64encode(b"s" * n_bytes).decode()


@pytest.mark.parametrize(
    ("dialect", "secret"),
    [
        ("standard", whsec(24)),
        ("standard", whsec(64)),
        ("ed25519", RFC_SIGNING_KEY),
        ("ed25519", whsk(RFC_SEED + RFC_PUBLIC)),
        ("hmac-hex", "a" * 16),
        ("hmac-hex", "~" * 512),
        ("hmac-hex", whsec(24)),
        ("hmac-hex", "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"),
        ("bearer", "b" * 16),
        ("bearer", "Z" * 512),
        ("bearer", "tok_live-0123456789.ABC"),
    ],
)
def test_a_secret_of_the_kind_the_dialect_takes_is_accepted_as_it_is(
    dialect: str, secret: str
) -> None:
    assert validate_secret(secret, dialect) == secret


@pytest.mark.parametrize(
    ("dialect", "secret"),
    [
        ("standard", whsec(23)),
        ("standard", whsec(65)),
        ("standard", RFC_SIGNING_KEY),
        ("standard", "s" * 32),
        ("ed25519", whsec(32)),
        ("ed25519", whsk(RFC_SEED[:31])),
        ("ed25519", whsk(RFC_SEED + b"x")),
        ("ed25519", whsk(RFC_SEED + RFC_PUBLIC + b"x")),
        ("ed25519", whsk(b"x" * 48)),
        ("ed25519", "whsk_not base64!"),
        ("ed25519", "whsk_"),
        ("ed25519", RFC_PUBLIC_KEY),
        ("hmac-hex", "a" * 15),
        ("hmac-hex", "a" * 513),
        ("hmac-hex", "sixteen chars ok"),
        ("hmac-hex", "tab\tinside-the-secret"),
        ("hmac-hex", "caf\u00e9-0123456789abcdef"),
        ("hmac-hex", ""),
        ("bearer", "b" * 15),
        ("bearer", "b" * 513),
        ("bearer", "with space 0123456789"),
        ("bearer", "del\x7f-0123456789abcdef"),
    ],
)
def test_a_secret_the_dialect_cannot_sign_with_is_refused_without_repeating_it(
    dialect: str, secret: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_secret(secret, dialect)
    assert caught.value.details.get("field") == "secret"
    if len(secret) >= 8:
        assert secret not in caught.value.message


@pytest.mark.parametrize("dialect", ["hmac-hex", "bearer"])
def test_a_token_secret_with_a_trailing_line_break_is_refused(dialect: str) -> None:
    # "Visible ASCII without spaces": a line feed is neither. (A regex anchored with ``$``
    # also matches before a final newline; the whole string must be checked.)
    with pytest.raises(ValidationFailed):
        validate_secret("abcdefghijklmnop\n", dialect)


@pytest.mark.parametrize("dialect", ["standard", "ed25519", "hmac-hex", "bearer"])
def test_a_generated_secret_is_of_the_kind_its_dialect_takes_and_fresh_each_time(
    dialect: str,
) -> None:
    first, second = generate_secret(dialect), generate_secret(dialect)
    assert validate_secret(first, dialect) == first
    assert first != second


def test_generated_secrets_have_the_documented_shapes() -> None:
    assert len(base64.b64decode(generate_secret("ed25519").removeprefix("whsk_"))) == 32
    hex_secret = generate_secret("hmac-hex")
    assert hex_secret.startswith("whsec_")
    assert len(base64.b64decode(hex_secret.removeprefix("whsec_"))) == 24
    bearer = generate_secret("bearer")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", bearer), bearer


def test_the_public_key_of_the_rfc_seed_is_the_rfc_public_key() -> None:
    assert public_key(RFC_SIGNING_KEY) == RFC_PUBLIC_KEY
    assert public_key(whsk(RFC_SEED + RFC_PUBLIC)) == RFC_PUBLIC_KEY


def test_the_public_key_is_the_one_cryptography_derives_from_the_seed() -> None:
    secret = generate_secret("ed25519")
    seed = base64.b64decode(secret.removeprefix("whsk_"))
    derived = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    raw = derived.public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert public_key(secret) == "whpk_" + base64.b64encode(raw).decode()


def test_the_public_key_of_a_secret_that_is_no_ed25519_key_is_refused() -> None:
    with pytest.raises(ValidationFailed):
        public_key(VECTOR_SECRET)


# -- the headers a dialect owns, and the prefix of hmac-hex ---------------------------------


@pytest.mark.parametrize(
    ("dialect", "prefix", "expected"),
    [
        ("standard", "Croupier", {"webhook-id", "webhook-timestamp", "webhook-signature"}),
        ("ed25519", "Example", {"webhook-id", "webhook-timestamp", "webhook-signature"}),
        ("hmac-hex", "Croupier", {"webhook-id", "x-croupier-signature", "x-croupier-timestamp"}),
        (
            "hmac-hex",
            "My-Example",
            {"webhook-id", "x-my-example-signature", "x-my-example-timestamp"},
        ),
        ("bearer", "Example", {"webhook-id", "authorization"}),
    ],
)
def test_signature_headers_names_in_lower_case_what_each_dialect_sets(
    dialect: str, prefix: str, expected: set[str]
) -> None:
    assert signature_headers(dialect, prefix) == frozenset(expected)


def test_signature_headers_default_to_the_croupier_prefix() -> None:
    assert "x-croupier-signature" in signature_headers("hmac-hex")


def test_every_header_a_signer_sets_is_one_signature_headers_names() -> None:
    for dialect, secret in [
        ("standard", VECTOR_SECRET),
        ("ed25519", RFC_SIGNING_KEY),
        ("hmac-hex", HEX_SECRET),
        ("bearer", HEX_SECRET),
    ]:
        sent = signer_for(dialect, [secret], header_prefix="Example").sign("evt_1", 1, b"{}")
        assert {name.lower() for name in sent} == signature_headers(dialect, "Example")


@pytest.mark.parametrize("prefix", ["Croupier", "Example", "A", "x9", "My-Example", "a" * 32])
def test_a_header_prefix_of_letters_digits_and_inner_dashes_is_accepted(prefix: str) -> None:
    assert validate_header_prefix(prefix) == prefix


@pytest.mark.parametrize(
    "prefix",
    ["", "-Example", "Example-", "Ex_ample", "Ex ample", "Ex:ample", "a" * 33, "Exämple", "Ex\r\n"],
)
def test_a_header_prefix_that_would_not_make_a_valid_header_name_is_refused(prefix: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_header_prefix(prefix)
    assert caught.value.details.get("field") == "header_prefix"


def test_a_header_prefix_with_a_trailing_line_break_is_refused() -> None:
    # ``X-Example\n-Signature`` is no header name; a ``$``-anchored match lets it through.
    with pytest.raises(ValidationFailed):
        validate_header_prefix("Example\n")


# -- the data body format -------------------------------------------------------------------


def event_with(data_json: bytes, event_type: str = "loyalty.scored") -> Event:
    return Event(
        id="evt_1",
        tenant_id="t",
        type=event_type,
        schema_version="1.0.0",
        data_json=data_json,
        occurred_at_ms=0,
        created_at_ms=0,
    )


def test_render_data_posts_an_objects_fields_flat_with_the_event_type() -> None:
    body = render_data(event_with(b'{"player":"p1","score":7,"nested":{"a":[1,2]}}'))
    assert orjson.loads(body) == {
        "player": "p1",
        "score": 7,
        "nested": {"a": [1, 2]},
        "event_type": "loyalty.scored",
    }


def test_render_data_lets_croupiers_event_type_win_over_a_data_field_of_that_name() -> None:
    body = render_data(event_with(b'{"event_type":"forged","score":1}'))
    assert orjson.loads(body) == {"event_type": "loyalty.scored", "score": 1}


@pytest.mark.parametrize("data", [b"[1,2]", b'"text"', b"42", b"null", b"true"])
def test_render_data_wraps_data_that_is_not_an_object(data: bytes) -> None:
    body = render_data(event_with(data))
    assert orjson.loads(body) == {"event_type": "loyalty.scored", "data": orjson.loads(data)}


# -- which secrets a courier signs with, over time ----------------------------------------------


def courier_spec(dialect: str, secrets: tuple[str, ...], until: int | None) -> EndpointSpec:
    return EndpointSpec(
        "ep_1", 1, "https://hooks.example.com/", {}, 1000, dialect, secrets, previous_until_ms=until
    )


def signature_count(signers: _Signers, now_ms: int) -> int:
    header = signers.at(now_ms).sign("evt_1", now_ms // 1000, b"{}")["webhook-signature"]
    return len(header.split(" "))


def test_the_previous_secret_signs_until_the_millisecond_before_its_window_ends() -> None:
    older = "whsec_" + base64.b64encode(b"o" * 24).decode()
    signers = _Signers.of(courier_spec("standard", (VECTOR_SECRET, older), 10_000))
    assert signature_count(signers, 0) == 2
    assert signature_count(signers, 9_999) == 2
    assert signature_count(signers, 10_000) == 1
    assert signature_count(signers, 10_001) == 1
    only = signers.at(10_000).sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY)["webhook-signature"]
    assert only == VECTOR_SIGNATURE, "after the window the newest secret alone signs"


def test_a_single_secret_signs_at_any_time() -> None:
    signers = _Signers.of(courier_spec("standard", (VECTOR_SECRET,), None))
    assert signers.previous_until_ms is None
    assert signature_count(signers, 0) == 1
    assert signature_count(signers, 2**62) == 1


def test_a_previous_secret_without_an_end_signs_with_the_newest_alone() -> None:
    older = "whsec_" + base64.b64encode(b"o" * 24).decode()
    signers = _Signers.of(courier_spec("standard", (VECTOR_SECRET, older), None))
    assert signature_count(signers, 0) == 1


def test_the_spec_of_an_endpoint_carries_its_previous_secret_and_window() -> None:
    older = "whsec_" + base64.b64encode(b"o" * 24).decode()
    endpoint = Endpoint(
        id="ep_1",
        tenant_id="t",
        url="https://hooks.example.com/",
        secret=VECTOR_SECRET,
        event_types=("x",),
        headers={},
        previous_secret=older,
        previous_secret_until_ms=5_000,
    )
    spec = EndpointSpec.of(endpoint)
    assert spec.secrets == (VECTOR_SECRET, older)
    assert spec.previous_until_ms == 5_000
    assert endpoint.signing_secrets(4_999) == (VECTOR_SECRET, older)
    assert endpoint.signing_secrets(5_000) == (VECTOR_SECRET,)
    assert EndpointSpec.of(dataclasses.replace(endpoint, previous_secret=None)).secrets == (
        VECTOR_SECRET,
    )
