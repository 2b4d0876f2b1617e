"""The Django decorator, through Django's test client with real signatures."""

from __future__ import annotations

import types
from collections.abc import Iterator

import django  # type: ignore[import-untyped, unused-ignore]
import pytest
from django.conf import settings  # type: ignore[import-untyped, unused-ignore]
from django.http import HttpRequest, HttpResponse, JsonResponse  # type: ignore[import-untyped, unused-ignore]
from django.test import Client, override_settings  # type: ignore[import-untyped, unused-ignore]
from django.urls import path  # type: ignore[import-untyped, unused-ignore]

from croupier.receiver import Dedupe, Event, MemoryDedupe, Verifier
from croupier.receiver.django import verify_webhook
from croupier.receiver.testing import sign
from tests.receiver.support import API_KEY, EVENT_ID, NOW, SECRET, Clock, round_completed_body

if not settings.configured:
    # The least Django needs to serve a view, with CSRF checks on to prove the exemption.
    settings.configure(
        DEBUG=False,
        SECRET_KEY="django-tests-only-not-a-secret",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()

urlpatterns: list[object] = []


class Recorder:
    """The view's side effects, and what it should do on its next call."""

    def __init__(self) -> None:
        self.handled: list[tuple[Event, str]] = []
        self.fail_with: Exception | None = None
        self.status = 200


def routes(verifier: Verifier, dedupe: Dedupe | None, recorder: Recorder) -> types.ModuleType:
    @verify_webhook(verifier, dedupe)
    def webhooks(request: HttpRequest, event: Event, tenant: str) -> HttpResponse:
        if recorder.fail_with is not None:
            raise recorder.fail_with
        recorder.handled.append((event, tenant))
        return JsonResponse({"handled": event.id}, status=recorder.status)

    urls = types.ModuleType("receiver_test_urls")
    urls.urlpatterns = [path("webhooks/<str:tenant>", webhooks)]  # type: ignore[attr-defined]
    return urls


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def serve(verifier: Verifier, dedupe: Dedupe | None, recorder: Recorder) -> Iterator[Client]:
    with override_settings(ROOT_URLCONF=routes(verifier, dedupe, recorder)):
        yield Client(enforce_csrf_checks=True)


@pytest.fixture
def client(clock: Clock, recorder: Recorder) -> Iterator[Client]:
    yield from serve(Verifier("standard", SECRET, now=clock), MemoryDedupe(now=clock), recorder)


def post(client: Client, body: bytes, headers: dict[str, str]) -> HttpResponse:
    headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    return client.post(
        "/webhooks/tenant-a", data=body, content_type="application/json", headers=headers
    )


def signed(body: bytes) -> dict[str, str]:
    return sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=NOW)


def test_a_verified_request_reaches_the_view_past_the_csrf_check(
    client: Client, recorder: Recorder
) -> None:
    body = round_completed_body()
    response = post(client, body, signed(body))
    assert response.status_code == 200
    assert response.json() == {"handled": EVENT_ID}
    [(event, tenant)] = recorder.handled
    assert (event.type, tenant) == ("round.completed", "tenant-a")


def test_a_bad_signature_is_answered_400_without_running_the_view(
    client: Client, recorder: Recorder
) -> None:
    body = round_completed_body()
    response = post(client, body.replace(b"14.6", b"99.9"), signed(body))
    assert response.status_code == 400
    assert response.json()["error"] == "signature"
    assert recorder.handled == []


def test_a_missing_header_is_named_in_the_answer(client: Client) -> None:
    body = round_completed_body()
    headers = signed(body)
    del headers["webhook-timestamp"]
    response = post(client, body, headers)
    assert response.json() == {
        "error": "missing_header",
        "message": "missing header webhook-timestamp",
    }


def test_a_duplicate_is_answered_200_without_running_the_view(
    client: Client, recorder: Recorder
) -> None:
    body = round_completed_body()
    post(client, body, signed(body))
    again = post(client, body, signed(body))
    assert again.status_code == 200
    assert again.json() == {"duplicate": True, "id": EVENT_ID}
    assert len(recorder.handled) == 1


def test_a_view_that_raises_releases_the_id_so_the_retry_is_handled(
    client: Client, recorder: Recorder
) -> None:
    body = round_completed_body()
    recorder.fail_with = RuntimeError("database down")
    with pytest.raises(RuntimeError, match="database down"):
        post(client, body, signed(body))
    recorder.fail_with = None
    assert post(client, body, signed(body)).json() == {"handled": EVENT_ID}


def test_a_view_that_answers_an_error_status_also_releases_the_id(
    client: Client, recorder: Recorder
) -> None:
    body = round_completed_body()
    recorder.status = 500
    assert post(client, body, signed(body)).status_code == 500
    recorder.status = 200
    assert post(client, body, signed(body)).json() == {"handled": EVENT_ID}
    assert len(recorder.handled) == 2


def test_bearer_failures_are_answered_401_with_a_challenge(recorder: Recorder) -> None:
    for client in serve(Verifier("bearer", API_KEY), None, recorder):
        body = round_completed_body()
        refused = post(client, body, {"Authorization": "Bearer nope"})
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        accepted = post(client, body, {"Authorization": f"Bearer {API_KEY}"})
        assert accepted.json() == {"handled": EVENT_ID}
