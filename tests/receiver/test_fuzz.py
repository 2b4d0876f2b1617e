"""Property tests of the header parsers: arbitrary input only ever fails as a VerificationError."""

from __future__ import annotations

import base64
import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from croupier.receiver import Verifier
from croupier.receiver.errors import VerificationError
from croupier.receiver.testing import generate_ed25519_keypair, sign
from tests.receiver.support import API_KEY, EVENT_ID, HEX_SECRET, NOW, SECRET, round_completed_body

BODY = round_completed_body()
ED_PRIVATE, ED_PUBLIC = generate_ed25519_keypair()
VERIFIERS = {
    "standard": Verifier("standard", SECRET, now=lambda: NOW),
    "ed25519": Verifier("ed25519", ED_PUBLIC, now=lambda: NOW),
    "hmac-hex": Verifier("hmac-hex", HEX_SECRET, now=lambda: NOW),
    "bearer": Verifier("bearer", API_KEY, now=lambda: NOW),
}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

header_text = st.text(max_size=200)
# Valid values often enough that the checks after them (signature parsing) are reached.
timestamp_text = st.one_of(st.just(str(NOW)), header_text)
id_text = st.one_of(st.just(EVENT_ID), header_text)
# Mostly junk, sometimes well-formed but wrong signatures of each version.
junk_entry = st.one_of(
    st.text(max_size=40),
    st.binary(min_size=32, max_size=32).map(lambda b: "v1," + base64.b64encode(b).decode()),
    st.binary(min_size=64, max_size=64).map(lambda b: "v1a," + base64.b64encode(b).decode()),
    st.binary(min_size=32, max_size=32).map(lambda b: "sha256=" + b.hex()),
    st.sampled_from(["v1", "v1,", "v1a,", ",", "sha256=", "v2,AAAA", "v1,====", "\x00"]),
)


def attempt(dialect: str, headers: dict[str, str], body: bytes = BODY) -> None:
    with contextlib.suppress(VerificationError):
        VERIFIERS[dialect].verify(headers, body)


@FUZZ
@given(signature=header_text, timestamp=timestamp_text, msg_id=id_text)
def test_arbitrary_standard_headers_only_raise_verification_errors(
    signature: str, timestamp: str, msg_id: str
) -> None:
    headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
    attempt("standard", headers)
    attempt("ed25519", headers)


@FUZZ
@given(signature=header_text, timestamp=timestamp_text)
def test_arbitrary_hmac_hex_headers_only_raise_verification_errors(
    signature: str, timestamp: str
) -> None:
    attempt("hmac-hex", {"X-Croupier-Signature": signature, "X-Croupier-Timestamp": timestamp})


@FUZZ
@given(authorization=header_text, body=st.binary(max_size=200))
def test_arbitrary_authorization_and_bodies_only_raise_verification_errors(
    authorization: str, body: bytes
) -> None:
    attempt("bearer", {"Authorization": authorization, "webhook-id": EVENT_ID}, body)
    attempt("bearer", {"Authorization": f"Bearer {API_KEY}"}, body)


@FUZZ
@given(
    before=st.lists(junk_entry, max_size=7),
    after=st.lists(junk_entry, max_size=7),
)
def test_a_valid_v1_signature_among_junk_entries_still_verifies(
    before: list[str], after: list[str]
) -> None:
    good = sign("standard", SECRET, BODY, msg_id=EVENT_ID, timestamp=NOW)
    header = " ".join([*before, good["webhook-signature"], *after])
    assert VERIFIERS["standard"].verify({**good, "webhook-signature": header}, BODY).id == EVENT_ID


@FUZZ
@given(
    before=st.lists(junk_entry, max_size=7),
    after=st.lists(junk_entry, max_size=7),
)
def test_a_valid_v1a_signature_among_junk_entries_still_verifies(
    before: list[str], after: list[str]
) -> None:
    good = sign("ed25519", ED_PRIVATE, BODY, msg_id=EVENT_ID, timestamp=NOW)
    header = " ".join([*before, good["webhook-signature"], *after])
    assert VERIFIERS["ed25519"].verify({**good, "webhook-signature": header}, BODY).id == EVENT_ID


@FUZZ
@given(
    before=st.lists(junk_entry, max_size=7),
    after=st.lists(junk_entry, max_size=7),
)
def test_a_valid_hex_signature_among_junk_entries_still_verifies(
    before: list[str], after: list[str]
) -> None:
    good = sign("hmac-hex", HEX_SECRET, BODY, msg_id=EVENT_ID, timestamp=NOW)
    header = ",".join([*before, good["X-Croupier-Signature"], *after])
    headers = {**good, "X-Croupier-Signature": header}
    assert VERIFIERS["hmac-hex"].verify(headers, BODY).id == EVENT_ID
