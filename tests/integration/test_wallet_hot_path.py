"""The wallet's hot path answers exactly as FastAPI's routes do, request for request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from croupier.api.rest.app import create_app
from croupier.api.rest.hotpath import HOT_WRITES
from croupier.bootstrap import Container
from tests.conftest import ADMIN_KEY
from tests.integration.wallet_support import funded_player

Case = tuple[str, dict[str, str], bytes]


@pytest.fixture
async def plain(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same croupier without the hot path: FastAPI serves every route."""
    transport = httpx.ASGITransport(app=create_app(container, hot_path=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://croupier.test") as c:
        yield c


@pytest.fixture
async def hot(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    """The same, with the hot path, and no header of its own either."""
    transport = httpx.ASGITransport(app=create_app(container, hot_path=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://croupier.test") as c:
        yield c


def _cases(session_id: str) -> list[Case]:
    auth = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
    good = b'"session_id":"%s","bet_id":"B","round_id":"r","amount":' % session_id.encode()
    return [
        ("no key", {"Content-Type": "application/json"}, b"{}"),
        ("bad key", {**auth, "Authorization": "Bearer nope"}, b"{}"),
        ("empty body", auth, b""),
        ("form body", {**auth, "Content-Type": "application/x-www-form-urlencoded"}, b"a=1"),
        ("malformed", auth, b'{"bet_id": '),
        ("not utf-8", auth, b'{"bet_id": "\xff"}'),
        ("nan", auth, b'{"amount": {"amount": NaN, "currency": "EUR"}}'),
        ("a list", auth, b"[1, 2]"),
        ("a string", auth, b'"hello"'),
        ("empty object", auth, b"{}"),
        ("unknown field", auth, b"{" + good + b'{"minor_units":1,"currency":"EUR"},"x":1}'),
        ("wrong type", auth, b'{"bet_id": 7}'),
        ("nested missing", auth, b"{" + good + b'{"minor_units":1}}'),
        ("no idempotency key", auth, b"{" + good + b'{"minor_units":1,"currency":"EUR"}}'),
        (
            "too precise",
            {**auth, "X-Idempotency-Key": "k1"},
            b"{" + good + b'{"amount":0.001,"currency":"EUR"}}',
        ),
    ]


async def test_every_hot_route_answers_as_fastapi_does(
    client: httpx.AsyncClient, hot: httpx.AsyncClient, plain: httpx.AsyncClient
) -> None:
    player = await funded_player(client)
    compared = 0
    for path in HOT_WRITES:
        for name, headers, body in _cases(player.session_id):
            fast = await hot.post(path, content=body, headers={**headers, "X-Trace-Id": "t"})
            slow = await plain.post(path, content=body, headers={**headers, "X-Trace-Id": "t"})
            assert (fast.status_code, _json(fast)) == (slow.status_code, _json(slow)), (
                path,
                name,
            )
            assert fast.headers.get("www-authenticate") == slow.headers.get("www-authenticate")
            compared += 1
    assert compared == len(HOT_WRITES) * 15


async def test_a_write_through_either_path_is_the_same_write(
    client: httpx.AsyncClient, hot: httpx.AsyncClient, plain: httpx.AsyncClient
) -> None:
    player = await funded_player(client)
    body = {
        "session_id": player.session_id,
        "bet_id": "b1",
        "round_id": "r1",
        "amount": {"amount": "2.00", "currency": "EUR"},
    }
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "X-Idempotency-Key": "same"}
    fast = await hot.post("/v1/bets/authorize", json=body, headers=headers)
    slow = await plain.post("/v1/bets/authorize", json=body, headers=headers)
    assert fast.status_code == slow.status_code == 200
    assert fast.json() == slow.json()
    # Only the hot routes take the short way: the others are FastAPI's.
    r = await client.get("/v1/players/p1/balance")
    assert r.json()["held"]["minor_units"] == 200


def _json(response: httpx.Response) -> Any:
    body = response.json()
    if isinstance(body, dict):
        body.pop("trace_id", None)
    return body
