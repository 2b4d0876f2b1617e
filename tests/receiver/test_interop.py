"""Interoperability: other Standard Webhooks implementations and croupier's verifier agree."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError
from svix.webhooks import Webhook as SvixWebhook

from croupier.receiver import SignatureError, Verifier
from croupier.receiver.testing import sign
from tests.receiver.support import EVENT_ID, NOW, OTHER_SECRET, SECRET, round_completed_body


def signed_by(library: type[StandardWebhook] | type[SvixWebhook], body: bytes) -> dict[str, str]:
    signature = library(SECRET).sign(EVENT_ID, datetime.fromtimestamp(NOW, UTC), body.decode())
    return {
        "webhook-id": EVENT_ID,
        "webhook-timestamp": str(NOW),
        "webhook-signature": signature,
    }


@pytest.mark.parametrize("library", [StandardWebhook, SvixWebhook])
def test_a_payload_signed_by_another_library_verifies_with_croupier(
    library: type[StandardWebhook] | type[SvixWebhook],
) -> None:
    body = round_completed_body()
    event = Verifier("standard", SECRET, now=lambda: NOW).verify(signed_by(library, body), body)
    assert event.id == EVENT_ID
    assert event.type == "round.completed"


@pytest.mark.parametrize("library", [StandardWebhook, SvixWebhook])
def test_another_librarys_signature_with_another_secret_is_refused(
    library: type[StandardWebhook] | type[SvixWebhook],
) -> None:
    body = round_completed_body()
    with pytest.raises(SignatureError):
        Verifier("standard", OTHER_SECRET, now=lambda: NOW).verify(signed_by(library, body), body)


def test_croupiers_signed_headers_verify_with_the_standardwebhooks_package() -> None:
    body = round_completed_body()
    # These libraries read the real clock, so the headers are signed now.
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=int(time.time()))
    assert StandardWebhook(SECRET).verify(body, headers)["id"] == EVENT_ID
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(OTHER_SECRET).verify(body, headers)


def test_croupiers_signed_headers_verify_with_the_svix_package() -> None:
    body = round_completed_body()
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=int(time.time()))
    SvixWebhook(SECRET).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        SvixWebhook(SECRET).verify(body + b" ", headers)


def test_a_rotation_header_with_two_signatures_verifies_with_the_other_libraries() -> None:
    body = round_completed_body()
    headers = sign(
        "standard", [OTHER_SECRET, SECRET], body, msg_id=EVENT_ID, timestamp=int(time.time())
    )
    StandardWebhook(SECRET).verify(body, headers)
    SvixWebhook(OTHER_SECRET).verify(body, headers)
