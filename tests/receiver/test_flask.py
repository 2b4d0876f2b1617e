"""The Flask decorator, through Flask's test client with real signatures."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.typing import ResponseReturnValue

from croupier.receiver import Dedupe, Event, MemoryDedupe, SQLiteDedupe, Verifier
from croupier.receiver.flask import verify_webhook
from croupier.receiver.testing import sign
from tests.receiver.support import (
    API_KEY,
    EVENT_ID,
    HEX_SECRET,
    NOW,
    SECRET,
    Clock,
    round_completed_body,
)


class Recorder:
    """The view's side effects, and what it should do on its next call."""

    def __init__(self) -> None:
        self.handled: list[tuple[Event, str]] = []
        self.fail_with: Exception | None = None
        self.status = 200


def build_app(verifier: Verifier, dedupe: Dedupe | None, recorder: Recorder) -> Flask:
    app = Flask(__name__)
    app.testing = True  # a view's exception reaches the test instead of becoming a 500

    @app.post("/webhooks/<tenant>")
    @verify_webhook(verifier, dedupe)
    def webhooks(event: Event, tenant: str) -> ResponseReturnValue:
        if recorder.fail_with is not None:
            raise recorder.fail_with
        recorder.handled.append((event, tenant))
        return {"handled": event.id}, recorder.status

    return app


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def app(clock: Clock, recorder: Recorder) -> Flask:
    return build_app(Verifier("standard", SECRET, now=clock), MemoryDedupe(now=clock), recorder)


def signed(body: bytes) -> dict[str, str]:
    return sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)


def test_a_verified_request_reaches_the_view_with_its_event_and_url_values(
    app: Flask, recorder: Recorder
) -> None:
    body = round_completed_body()
    response = app.test_client().post("/webhooks/tenant-a", data=body, headers=signed(body))
    assert response.status_code == 200
    assert response.get_json() == {"handled": EVENT_ID}
    [(event, tenant)] = recorder.handled
    assert (event.type, tenant) == ("round.completed", "tenant-a")


def test_a_bad_signature_is_answered_400_without_running_the_view(
    app: Flask, recorder: Recorder
) -> None:
    body = round_completed_body()
    response = app.test_client().post("/webhooks/tenant-a", data=b"{}", headers=signed(body))
    assert response.status_code == 400
    assert response.get_json() == {
        "error": "signature",
        "message": "no v1 signature in webhook-signature matches",
    }
    assert recorder.handled == []


def test_a_duplicate_is_answered_200_without_running_the_view(
    app: Flask, recorder: Recorder
) -> None:
    body = round_completed_body()
    client = app.test_client()
    client.post("/webhooks/tenant-a", data=body, headers=signed(body))
    again = client.post("/webhooks/tenant-a", data=body, headers=signed(body))
    assert again.status_code == 200
    assert again.get_json() == {"duplicate": True, "id": EVENT_ID}
    assert len(recorder.handled) == 1


def test_a_view_that_raises_releases_the_id_so_the_retry_is_handled(
    app: Flask, recorder: Recorder
) -> None:
    body = round_completed_body()
    client = app.test_client()
    recorder.fail_with = RuntimeError("database down")
    with pytest.raises(RuntimeError, match="database down"):
        client.post("/webhooks/tenant-a", data=body, headers=signed(body))
    recorder.fail_with = None
    retried = client.post("/webhooks/tenant-a", data=body, headers=signed(body))
    assert retried.get_json() == {"handled": EVENT_ID}


def test_a_view_that_answers_an_error_status_also_releases_the_id(
    app: Flask, recorder: Recorder
) -> None:
    body = round_completed_body()
    client = app.test_client()
    recorder.status = 503
    assert client.post("/webhooks/tenant-a", data=body, headers=signed(body)).status_code == 503
    recorder.status = 200
    retried = client.post("/webhooks/tenant-a", data=body, headers=signed(body))
    assert retried.get_json() == {"handled": EVENT_ID}
    assert len(recorder.handled) == 2


def test_bearer_failures_are_answered_401_with_a_challenge(recorder: Recorder) -> None:
    app = build_app(Verifier("bearer", API_KEY), None, recorder)
    body = round_completed_body()
    client = app.test_client()
    refused = client.post("/webhooks/tenant-a", data=body, headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    authorized = {"Authorization": f"Bearer {API_KEY}"}
    ok = client.post("/webhooks/tenant-a", data=body, headers=authorized)
    assert ok.get_json() == {"handled": EVENT_ID}


def test_hmac_hex_requests_verify_through_flask(clock: Clock, recorder: Recorder) -> None:
    verifier = Verifier("hmac-hex", HEX_SECRET, header_prefix="Example", now=clock)
    app = build_app(verifier, None, recorder)
    body = b'{"campaign_id":"c1","player_id":"p1","event_type":"PLAYER_OPTED_IN"}'
    headers = sign(
        "hmac-hex", HEX_SECRET, body, msg_id=EVENT_ID, timestamp=NOW, header_prefix="Example"
    )
    response = app.test_client().post("/webhooks/tenant-a", data=body, headers=headers)
    assert response.get_json() == {"handled": EVENT_ID}
    assert recorder.handled[0][0].data == {"campaign_id": "c1", "player_id": "p1"}


def test_sqlite_dedupe_behind_flask_survives_a_new_app(
    tmp_path: Path, clock: Clock, recorder: Recorder
) -> None:
    body = round_completed_body()
    verifier = Verifier("standard", SECRET, now=clock)
    with SQLiteDedupe(tmp_path / "seen.db", now=clock) as dedupe:
        build_app(verifier, dedupe, recorder).test_client().post(
            "/webhooks/tenant-a", data=body, headers=signed(body)
        )
    with SQLiteDedupe(tmp_path / "seen.db", now=clock) as dedupe:
        again = (
            build_app(verifier, dedupe, recorder)
            .test_client()
            .post("/webhooks/tenant-a", data=body, headers=signed(body))
        )
    assert again.get_json() == {"duplicate": True, "id": EVENT_ID}
    assert len(recorder.handled) == 1
