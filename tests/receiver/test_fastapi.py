"""The FastAPI dependency, through the ASGI app with real signatures.

No ``from __future__ import annotations`` here: the routes are built inside a function, and
FastAPI must see their ``Depends`` on a local name, which string annotations would hide.
"""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException

from croupier.receiver import Dedupe, Event, MemoryDedupe, SQLiteDedupe, Verifier
from croupier.receiver.fastapi import DuplicateDelivery, webhook_dependency
from croupier.receiver.testing import sign
from tests.receiver.support import API_KEY, EVENT_ID, NOW, SECRET, Clock, round_completed_body


class Recorder:
    """The route's side effects, and what it should do on its next call."""

    def __init__(self) -> None:
        self.handled: list[Event] = []
        self.fail_with: BaseException | None = None


def build_app(verifier: Verifier, dedupe: Dedupe | None, recorder: Recorder) -> FastAPI:
    app = FastAPI()
    verified_event = webhook_dependency(verifier, dedupe)

    @app.post("/webhooks")
    async def webhooks(event: Annotated[Event, Depends(verified_event)]) -> dict[str, str]:
        if recorder.fail_with is not None:
            raise recorder.fail_with
        recorder.handled.append(event)
        return {"handled": event.id}

    return app


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


async def client_for(app: FastAPI) -> httpx.AsyncClient:
    # Exceptions of the route become 500 answers, as a real server would send.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://receiver.test")


@pytest.fixture
async def memory_client(clock: Clock, recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(Verifier("standard", SECRET, now=clock), MemoryDedupe(now=clock), recorder)
    async with await client_for(app) as client:
        yield client


def signed(body: bytes, msg_id: str = EVENT_ID) -> dict[str, str]:
    return sign("standard", SECRET, body, msg_id=msg_id, timestamp=NOW)


async def test_a_verified_request_reaches_the_route_with_its_event(
    memory_client: httpx.AsyncClient, recorder: Recorder
) -> None:
    body = round_completed_body()
    response = await memory_client.post("/webhooks", content=body, headers=signed(body))
    assert response.status_code == 200
    assert response.json() == {"handled": EVENT_ID}
    assert [e.type for e in recorder.handled] == ["round.completed"]


async def test_a_bad_signature_is_answered_400_naming_the_error_kind(
    memory_client: httpx.AsyncClient, recorder: Recorder
) -> None:
    body = round_completed_body()
    response = await memory_client.post("/webhooks", content=body + b" ", headers=signed(body))
    assert response.status_code == 400
    assert response.json()["detail"]["error"] == "signature"
    assert SECRET not in response.text
    assert recorder.handled == []


async def test_a_missing_header_and_a_stale_timestamp_are_400_with_their_kind(
    memory_client: httpx.AsyncClient, clock: Clock
) -> None:
    body = round_completed_body()
    headers = signed(body)
    del headers["webhook-signature"]
    response = await memory_client.post("/webhooks", content=body, headers=headers)
    assert response.json()["detail"] == {
        "error": "missing_header",
        "message": "missing header webhook-signature",
    }
    clock.advance(3600)
    response = await memory_client.post("/webhooks", content=body, headers=signed(body))
    assert (response.status_code, response.json()["detail"]["error"]) == (400, "timestamp")


async def test_a_duplicate_is_answered_200_without_running_the_route(
    memory_client: httpx.AsyncClient, recorder: Recorder
) -> None:
    body = round_completed_body()
    first = await memory_client.post("/webhooks", content=body, headers=signed(body))
    again = await memory_client.post("/webhooks", content=body, headers=signed(body))
    assert first.status_code == again.status_code == 200
    assert again.json() == {"detail": {"duplicate": True, "id": EVENT_ID}}
    assert len(recorder.handled) == 1


async def test_a_route_that_raises_releases_the_id_so_the_retry_is_handled(
    memory_client: httpx.AsyncClient, recorder: Recorder
) -> None:
    body = round_completed_body()
    recorder.fail_with = RuntimeError("database down")
    failed = await memory_client.post("/webhooks", content=body, headers=signed(body))
    assert failed.status_code == 500
    recorder.fail_with = None
    retried = await memory_client.post("/webhooks", content=body, headers=signed(body))
    assert retried.json() == {"handled": EVENT_ID}
    assert len(recorder.handled) == 1


async def test_an_http_exception_from_the_route_also_releases_the_id(
    memory_client: httpx.AsyncClient, recorder: Recorder
) -> None:
    body = round_completed_body()
    recorder.fail_with = HTTPException(status_code=503, detail="busy")
    failed = await memory_client.post("/webhooks", content=body, headers=signed(body))
    assert failed.status_code == 503
    recorder.fail_with = None
    retried = await memory_client.post("/webhooks", content=body, headers=signed(body))
    assert retried.json() == {"handled": EVENT_ID}


async def test_bearer_failures_are_answered_401_with_a_challenge(recorder: Recorder) -> None:
    app = build_app(Verifier("bearer", API_KEY), None, recorder)
    body = round_completed_body()
    async with await client_for(app) as client:
        refused = await client.post(
            "/webhooks", content=body, headers={"Authorization": "Bearer wrong_key"}
        )
        accepted = await client.post(
            "/webhooks", content=body, headers={"Authorization": f"Bearer {API_KEY}"}
        )
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["detail"]["error"] == "signature"
    assert accepted.json() == {"handled": EVENT_ID}


async def test_without_dedupe_every_copy_reaches_the_route(
    clock: Clock, recorder: Recorder
) -> None:
    app = build_app(Verifier("standard", SECRET, now=clock), None, recorder)
    body = round_completed_body()
    async with await client_for(app) as client:
        for _ in range(2):
            await client.post("/webhooks", content=body, headers=signed(body))
    assert len(recorder.handled) == 2


async def test_sqlite_dedupe_works_from_the_event_loop(
    tmp_path: Path, clock: Clock, recorder: Recorder
) -> None:
    with SQLiteDedupe(tmp_path / "seen.db", now=clock) as dedupe:
        app = build_app(Verifier("standard", SECRET, now=clock), dedupe, recorder)
        body = round_completed_body()
        async with await client_for(app) as client:
            answers = [
                (await client.post("/webhooks", content=body, headers=signed(body))).json()
                for _ in range(2)
            ]
    assert answers == [{"handled": EVENT_ID}, {"detail": {"duplicate": True, "id": EVENT_ID}}]


async def test_the_route_sees_the_raw_body_so_unusual_json_still_verifies(
    memory_client: httpx.AsyncClient, recorder: Recorder
) -> None:
    raw = b'{ "type" : "x.y",\n  "id" : "evt_raw", "data" : {"name": "Jos\\u00e9", "n": 1.50e1} }'
    response = await memory_client.post("/webhooks", content=raw, headers=signed(raw, "evt_raw"))
    assert response.json() == {"handled": "evt_raw"}
    assert recorder.handled[0].data == {"name": "José", "n": 15.0}


def test_duplicate_delivery_is_an_http_exception_answered_200() -> None:
    event = Event(
        id=EVENT_ID,
        type="t",
        data={},
        timestamp=NOW,
        occurred_at=None,
        schema_version=None,
        attempt=None,
        format="data",
        body={},
    )
    duplicate = DuplicateDelivery(event)
    assert isinstance(duplicate, HTTPException)
    assert duplicate.status_code == 200
    assert duplicate.event is event
