"""How headers are read, and the signing helpers offered for receivers' own tests."""

from __future__ import annotations

import base64

import pytest

from croupier.receiver import SignatureError, Verifier
from croupier.receiver.testing import envelope_body, generate_ed25519_keypair, generate_secret, sign
from tests.receiver.support import EVENT_ID, NOW, OTHER_SECRET, SECRET, Clock, round_completed_body


def test_when_a_header_is_repeated_the_first_value_counts(clock: Clock) -> None:
    body = round_completed_body()
    good = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    bad = sign("standard", OTHER_SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    verifier = Verifier("standard", SECRET, now=clock)
    first_good = [*good.items(), ("Webhook-Signature", bad["webhook-signature"])]
    assert verifier.verify(first_good, body).id == EVENT_ID
    first_bad = [("webhook-signature", bad["webhook-signature"]), *good.items()]
    with pytest.raises(SignatureError):
        verifier.verify(first_bad, body)


def test_raw_byte_header_pairs_are_read_as_latin_1(clock: Clock) -> None:
    body = round_completed_body()
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    raw = [(name.encode(), value.encode("latin-1")) for name, value in headers.items()]
    assert Verifier("standard", SECRET, now=clock).verify(raw, body).id == EVENT_ID  # type: ignore[arg-type]


def test_surrounding_whitespace_in_header_values_is_ignored(clock: Clock) -> None:
    body = round_completed_body()
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)
    padded = {name: f"  {value}\t" for name, value in headers.items()}
    assert Verifier("standard", SECRET, now=clock).verify(padded, body).id == EVENT_ID


def test_generated_secrets_are_whsec_with_the_requested_number_of_bytes() -> None:
    secret = generate_secret(32)
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert Verifier("standard", secret)
    with pytest.raises(ValueError, match="24 to 64"):
        generate_secret(8)


def test_generated_ed25519_keys_pair_a_whsk_seed_with_its_whpk_public_key(clock: Clock) -> None:
    private, public = generate_ed25519_keypair()
    assert private.startswith("whsk_")
    assert public.startswith("whpk_")
    body = envelope_body("system.incident", {"incidentId": "inc_1"}, event_id=EVENT_ID)
    headers = sign("ed25519", private, body, msg_id=EVENT_ID, timestamp=NOW)
    event = Verifier("ed25519", public, now=clock).verify(headers, body)
    assert (event.type, event.data) == ("system.incident", {"incidentId": "inc_1"})


def test_sign_sends_what_croupier_sends_in_every_dialect() -> None:
    body = b"{}"
    assert set(sign("standard", SECRET, body, msg_id="e", timestamp=NOW)) == {
        "Content-Type",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
    assert set(sign("hmac-hex", "s", body, msg_id="e", header_prefix="Example")) == {
        "Content-Type",
        "webhook-id",
        "X-Example-Signature",
        "X-Example-Timestamp",
    }
    assert sign("bearer", "key", body, msg_id="e")["Authorization"] == "Bearer key"
    with pytest.raises(ValueError, match="unknown dialect"):
        sign("plain", "key", body, msg_id="e")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one secret"):
        sign("standard", [], body, msg_id="e")
