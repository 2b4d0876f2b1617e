from __future__ import annotations

import base64

import pytest
from standardwebhooks.webhooks import Webhook

from croupier.domain.errors import ValidationFailed
from croupier.domain.signing import (
    StandardWebhooksSigner,
    generate_secret,
    signer_for,
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
