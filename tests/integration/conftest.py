"""Helpers for the REST API tests: valid payloads, endpoints, other tenants, scripted receivers.

Everything here goes through the REST API, as a client would; only the dispatcher is driven
directly (``container.dispatcher.run_until_idle()``), because it does not run in the
background in these tests.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from croupier.api.rest.app import create_app
from croupier.bootstrap import Container
from croupier.catalog import builtin_event_type
from croupier.domain.clock import ManualClock
from croupier.domain.envelope import iso_ms
from tests.support.receiver import Receiver, Reply

#: An opt-in type with a tiny payload: endpoints subscribe to it explicitly.
OPT_IN = "PLAYER_OPTED_IN"
ERROR_KEYS = {"code", "message", "retryable", "trace_id"}


def example(event_type: str) -> dict[str, Any]:
    """A fresh copy of the catalog's first example payload of a shipped type."""
    found = builtin_event_type(event_type)
    assert found is not None, event_type
    copy: dict[str, Any] = orjson.loads(orjson.dumps(found.examples[0]))
    return copy


def opt_in(player: str = "p1", **extra: Any) -> dict[str, Any]:
    """A valid ``PLAYER_OPTED_IN`` payload."""
    return {"player_id": player, "campaign_id": "c1", "event_type": OPT_IN, **extra}


async def create_endpoint(client: httpx.AsyncClient, url: str, **fields: Any) -> dict[str, Any]:
    """Create an endpoint (subscribed to ``PLAYER_OPTED_IN`` unless told otherwise)."""
    body = {"url": url, "event_types": [OPT_IN], **fields}
    r = await client.post("/v1/endpoints", json=body)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def publish(
    client: httpx.AsyncClient,
    event_type: str = OPT_IN,
    data: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Publish a valid event and return the 202 answer."""
    if data is None:
        data = opt_in() if event_type == OPT_IN else example(event_type)
    r = await client.post("/v1/events", json={"type": event_type, "data": data, **fields})
    assert r.status_code == 202, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def get_json(client: httpx.AsyncClient, path: str, **params: str) -> dict[str, Any]:
    r = await client.get(path, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def list_all(client: httpx.AsyncClient, path: str, **params: str) -> list[dict[str, Any]]:
    """Every item of a list resource, following ``next_cursor`` to the end."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):
        query = dict(params)
        if cursor is not None:
            query["cursor"] = cursor
        page = await get_json(client, path, **query)
        items.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError(f"{path} never reached the end of its pages")


def assert_error(
    response: httpx.Response, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    """The response is ``status`` in the single error schema, with ``code`` (and ``field``)."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) >= ERROR_KEYS, body
    assert set(body) - ERROR_KEYS <= {"field"}, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    assert isinstance(body["retryable"], bool), body
    assert isinstance(body["trace_id"], str) and body["trace_id"], body
    assert body["trace_id"] == response.headers.get("x-trace-id"), body
    if field is not None:
        assert body.get("field") == field, body
    return body


def cursor_for(position: Any) -> str:
    """A cursor built the way croupier builds them, around any position (to forge one)."""
    return base64.urlsafe_b64encode(orjson.dumps({"p": position})).decode().rstrip("=")


def iso(clock: ManualClock, offset_s: float = 0) -> str:
    """The clock's time (plus an offset) as the API writes times."""
    return iso_ms(clock.now_ms() + int(offset_s * 1000))


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


@dataclass(frozen=True)
class TenantClient:
    """Another tenant, with a client that carries its own (non-admin) key."""

    id: str
    name: str
    key: str
    http: httpx.AsyncClient


class TenantFactory:
    """``await new_tenant("acme")``: a tenant created by the admin, with a key of its own."""

    def __init__(self, admin: httpx.AsyncClient, container: Container) -> None:
        self._admin = admin
        self._app = create_app(container)
        self._opened: list[httpx.AsyncClient] = []

    async def __call__(self, name: str) -> TenantClient:
        r = await self._admin.post("/v1/tenants", json={"name": name})
        assert r.status_code == 201, r.text
        tenant_id: str = r.json()["id"]
        r = await self._admin.post(f"/v1/tenants/{tenant_id}/keys")
        assert r.status_code == 201, r.text
        key: str = r.json()["key"]
        return TenantClient(tenant_id, name, key, self.client(key))

    def client(self, key: str | None, **options: Any) -> httpx.AsyncClient:
        """A client on the same app, with ``key`` as its bearer key (None: no header)."""
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        c = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self._app, **options),
            base_url="http://croupier.test",
            headers=headers,
        )
        self._opened.append(c)
        return c

    async def close(self) -> None:
        for c in self._opened:
            await c.aclose()


@pytest.fixture
async def new_tenant(
    client: httpx.AsyncClient, container: Container
) -> AsyncIterator[TenantFactory]:
    factory = TenantFactory(client, container)
    yield factory
    await factory.close()


class ReceiverFactory:
    """``await start_receiver(script)``: a scripted receiver, stopped after the test."""

    def __init__(self) -> None:
        self._started: list[Receiver] = []

    async def __call__(self, script: Callable[[str, int], Reply]) -> Receiver:
        r = await Receiver.start(script)
        self._started.append(r)
        return r

    async def close(self) -> None:
        for r in self._started:
            await r.stop()


@pytest.fixture
async def start_receiver() -> AsyncIterator[ReceiverFactory]:
    factory = ReceiverFactory()
    yield factory
    await factory.close()
