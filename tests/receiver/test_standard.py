"""The standard dialect (Standard Webhooks v1): vectors, rotation, tolerance, bad input."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from croupier.receiver import (
    MAX_HEADER_CHARS,
    MissingHeaderError,
    PayloadError,
    SignatureError,
    TimestampError,
    VerificationError,
    Verifier,
)
from croupier.receiver.testing import sign
from tests.receiver.support import (
    EVENT_ID,
    NOW,
    OTHER_SECRET,
    SECRET,
    Clock,
    round_completed_body,
)

# Test vector published with the Standard Webhooks specification's reference libraries
# (their test suites sign and verify this exact message): secret, id, timestamp, body and
# the v1 signature they expect.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
# The same suites' "invalid signature" case: the vector with its last byte changed.
VECTOR_BAD_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
# Their multi-signature case: decoys of v1 and of an unknown v2 around the good one.
VECTOR_DECOY = "Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="


def vector_headers(signature: str = VECTOR_SIGNATURE) -> dict[str, str]:
    return {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": signature,
    }


def vector_verifier(secret: str = VECTOR_SECRET) -> Verifier:
    return Verifier("standard", secret, now=lambda: VECTOR_TS)


def standard_verifier(clock: Clock) -> Verifier:
    return Verifier("standard", SECRET, now=clock)


def test_the_published_vector_authenticates() -> None:
    signed = vector_verifier().authenticate(vector_headers(), VECTOR_BODY)
    assert signed.webhook_id == VECTOR_ID
    assert signed.timestamp == VECTOR_TS


def test_the_published_vector_authenticates_with_the_secret_given_without_its_prefix() -> None:
    verifier = vector_verifier(VECTOR_SECRET.removeprefix("whsec_"))
    assert verifier.authenticate(vector_headers(), VECTOR_BODY).timestamp == VECTOR_TS


def test_the_published_vector_is_accepted_among_decoys_of_other_versions() -> None:
    header = " ".join(
        [f"v1,{VECTOR_DECOY}", f"v2,{VECTOR_DECOY}", VECTOR_SIGNATURE, f"v1,{VECTOR_DECOY}"]
    )
    assert vector_verifier().authenticate(vector_headers(header), VECTOR_BODY)


def test_the_published_invalid_signature_is_refused() -> None:
    with pytest.raises(SignatureError, match="no v1 signature in webhook-signature matches"):
        vector_verifier().authenticate(vector_headers(VECTOR_BAD_SIGNATURE), VECTOR_BODY)


def test_the_published_vector_body_is_not_an_event_so_verify_says_payload() -> None:
    # The signature is good; the body just is not one of croupier's two formats.
    with pytest.raises(PayloadError, match="neither an envelope"):
        vector_verifier().verify(vector_headers(), VECTOR_BODY)


def test_a_signed_envelope_verifies_into_its_event(clock: Clock) -> None:
    body = round_completed_body(attempt=3)
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    event = standard_verifier(clock).verify(headers, body)
    assert event.id == EVENT_ID
    assert event.type == "round.completed"
    assert event.data["winAmount"] == 14.6
    assert event.timestamp == NOW
    assert event.attempt == 3
    assert event.schema_version == "1.0.0"
    assert event.occurred_at == "2023-11-14T22:13:19.500Z"
    assert event.format == "envelope"
    assert event.body == json.loads(body)


def test_the_body_may_be_given_as_text(clock: Clock) -> None:
    body = round_completed_body()
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    assert standard_verifier(clock).verify(headers, body.decode()).id == EVENT_ID


def test_header_names_match_in_any_case_and_as_a_list_of_pairs(clock: Clock) -> None:
    body = round_completed_body()
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    pairs = [(name.upper(), value) for name, value in headers.items()]
    assert standard_verifier(clock).verify(pairs, body).id == EVENT_ID
    title = {name.title(): value for name, value in headers.items()}
    assert standard_verifier(clock).verify(title, body).id == EVENT_ID


def test_any_of_several_secrets_verifies_during_a_rotation(clock: Clock) -> None:
    body = round_completed_body()
    verifier = Verifier("standard", secrets=[OTHER_SECRET, SECRET], now=clock)
    for secret in (SECRET, OTHER_SECRET):
        headers = sign("standard", secret, body, msg_id=EVENT_ID, timestamp=NOW)
        assert verifier.verify(headers, body).id == EVENT_ID


def test_a_header_signed_with_two_secrets_verifies_with_either(clock: Clock) -> None:
    body = round_completed_body()
    headers = sign("standard", [OTHER_SECRET, SECRET], body, msg_id=EVENT_ID, timestamp=NOW)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert standard_verifier(clock).verify(headers, body).id == EVENT_ID


def test_v1a_entries_mixed_in_are_skipped_by_the_v1_check(clock: Clock) -> None:
    body = round_completed_body()
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    ed_junk = "v1a," + base64.b64encode(bytes(64)).decode()
    headers["webhook-signature"] = f"{ed_junk} {headers['webhook-signature']}"
    assert standard_verifier(clock).verify(headers, body).id == EVENT_ID


def test_a_tampered_body_is_refused(clock: Clock) -> None:
    body = round_completed_body()
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    with pytest.raises(SignatureError):
        standard_verifier(clock).verify(headers, body.replace(b"14.6", b"99.6"))


def test_a_changed_webhook_id_is_refused_because_it_is_signed(clock: Clock) -> None:
    body = round_completed_body()
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    headers["webhook-id"] = "evt_other"
    with pytest.raises(SignatureError):
        standard_verifier(clock).verify(headers, body)


def test_a_body_signed_with_another_secret_is_refused(clock: Clock) -> None:
    body = round_completed_body()
    headers = sign("standard", OTHER_SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    with pytest.raises(SignatureError, match="matches"):
        standard_verifier(clock).verify(headers, body)


@pytest.mark.parametrize("offset", [300, -300])
def test_a_timestamp_right_at_the_tolerance_is_accepted(clock: Clock, offset: int) -> None:
    body = round_completed_body()
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW + offset)
    assert standard_verifier(clock).verify(headers, body).timestamp == NOW + offset


@pytest.mark.parametrize("offset", [-3600, -301, 301, 3600])
def test_a_stale_or_future_timestamp_is_refused(clock: Clock, offset: int) -> None:
    body = round_completed_body()
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW + offset)
    with pytest.raises(TimestampError) as caught:
        standard_verifier(clock).verify(headers, body)
    assert str(caught.value) == (
        f"timestamp {NOW + offset} is {abs(offset)} s away from now; tolerance is 300 s"
    )
    assert caught.value.timestamp == NOW + offset


def test_the_tolerance_follows_the_injected_clock(clock: Clock) -> None:
    body = round_completed_body()
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    verifier = Verifier("standard", SECRET, tolerance_s=60, now=clock)
    assert verifier.verify(headers, body)
    clock.advance(61)
    with pytest.raises(TimestampError, match="61 s away"):
        verifier.verify(headers, body)


@pytest.mark.parametrize("value", ["soon", "1700000000.5", "-1700000000", "1e9", "", " "])
def test_a_timestamp_that_is_not_whole_seconds_is_refused(clock: Clock, value: str) -> None:
    body = round_completed_body()
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    headers["webhook-timestamp"] = value
    expected = MissingHeaderError if not value.strip() else TimestampError
    with pytest.raises(expected):
        standard_verifier(clock).verify(headers, body)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_each_missing_header_is_named(clock: Clock, missing: str) -> None:
    body = round_completed_body()
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    del headers[missing]
    with pytest.raises(MissingHeaderError) as caught:
        standard_verifier(clock).verify(headers, body)
    assert str(caught.value) == f"missing header {missing}"
    assert caught.value.header == missing


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("v1", "webhook-signature has no v1 signature"),
        ("v1,", "webhook-signature has no v1 signature"),
        ("v1,not*base64!", "webhook-signature has no v1 signature"),
        ("v1," + base64.b64encode(bytes(31)).decode(), "webhook-signature has no v1 signature"),
        ("v2," + base64.b64encode(bytes(32)).decode(), "webhook-signature has no v1 signature"),
        ("v1a," + base64.b64encode(bytes(64)).decode(), "webhook-signature has no v1 signature"),
        ("sha256=" + "0" * 64, "webhook-signature has no v1 signature"),
        ("v1," + base64.b64encode(bytes(32)).decode(), "no v1 signature in webhook-signature"),
    ],
)
def test_malformed_or_foreign_signature_entries_are_skipped(
    clock: Clock, header: str, message: str
) -> None:
    body = round_completed_body()
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    headers["webhook-signature"] = header
    with pytest.raises(SignatureError, match=message):
        standard_verifier(clock).verify(headers, body)


def test_a_signature_header_over_8_kib_is_refused_before_any_work(clock: Clock) -> None:
    body = round_completed_body()
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    headers["webhook-signature"] = (headers["webhook-signature"] + " ") * 200
    assert len(headers["webhook-signature"]) > MAX_HEADER_CHARS
    with pytest.raises(SignatureError, match="signature header too long"):
        standard_verifier(clock).verify(headers, body)


def test_a_huge_webhook_id_is_refused(clock: Clock) -> None:
    body = round_completed_body()
    headers = sign("standard", SECRET, body, msg_id="x" * 10_000, timestamp=NOW)
    with pytest.raises(SignatureError, match="webhook-id header too long"):
        standard_verifier(clock).verify(headers, body)


def test_only_the_first_16_well_formed_signatures_are_tried(clock: Clock) -> None:
    body = round_completed_body()
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    good = headers["webhook-signature"]
    decoys = ["v1," + base64.b64encode(bytes([i]) * 32).decode() for i in range(16)]
    headers["webhook-signature"] = " ".join([*decoys, good])
    with pytest.raises(SignatureError):
        standard_verifier(clock).verify(headers, body)
    headers["webhook-signature"] = " ".join([*decoys[:15], good])
    assert standard_verifier(clock).verify(headers, body).id == EVENT_ID


def test_a_good_signature_over_a_body_that_is_not_json_is_a_payload_error(clock: Clock) -> None:
    body = b"<xml>not json</xml>"
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    with pytest.raises(PayloadError, match="body is not valid JSON") as caught:
        standard_verifier(clock).verify(headers, body)
    assert isinstance(caught.value, VerificationError)


def test_the_signature_covers_the_raw_bytes_so_reserialised_json_fails(clock: Clock) -> None:
    raw = b'{"id": "evt_0001", "type": "x.y", "data": {"name": "Jos\\u00e9", "amount": 2.50}}'
    headers = sign("standard", SECRET, raw, msg_id=EVENT_ID, timestamp=NOW)
    verifier = standard_verifier(clock)
    assert verifier.verify(headers, raw).data == {"name": "José", "amount": 2.5}
    reserialised = json.dumps(json.loads(raw), separators=(",", ":")).encode()
    with pytest.raises(SignatureError):
        verifier.verify(headers, reserialised)


def test_errors_and_reprs_never_show_the_secret_or_the_expected_signature(clock: Clock) -> None:
    body = round_completed_body()
    verifier = standard_verifier(clock)
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    good = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    expected_hex = hmac.new(key, f"{EVENT_ID}.{NOW}.".encode() + body, hashlib.sha256).hexdigest()
    forbidden = [SECRET, SECRET.removeprefix("whsec_"), good["webhook-signature"], expected_hex]
    attempts = [
        (good, body + b" "),
        ({**good, "webhook-signature": "v1,AAAA"}, body),
        ({**good, "webhook-timestamp": "1"}, body),
        ({k: v for k, v in good.items() if k != "webhook-id"}, body),
    ]
    for headers, raw in attempts:
        with pytest.raises(VerificationError) as caught:
            verifier.verify(headers, raw)
        for secret_text in forbidden:
            assert secret_text not in str(caught.value)
            assert secret_text not in repr(caught.value)
    assert repr(verifier) == "Verifier(dialect='standard', keys=1, tolerance_s=300)"
    assert all(s not in repr(verifier) for s in forbidden)
