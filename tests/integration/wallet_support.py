"""Helpers for the wallet's REST tests: a funded player with an open session, in one call."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import httpx

_keys = itertools.count(1)


def key() -> str:
    """A fresh idempotency key."""
    return f"key-{next(_keys)}"


async def write(
    client: httpx.AsyncClient,
    path: str,
    body: dict[str, Any] | bytes,
    *,
    idempotency_key: str | None = None,
) -> httpx.Response:
    """POST a wallet write with an idempotency key (a fresh one unless given)."""
    headers = {"X-Idempotency-Key": idempotency_key or key()}
    if isinstance(body, bytes):
        headers["Content-Type"] = "application/json"
        return await client.post(path, content=body, headers=headers)
    return await client.post(path, json=body, headers=headers)


async def ok(client: httpx.AsyncClient, path: str, body: dict[str, Any], **kw: Any) -> Any:
    r = await write(client, path, body, **kw)
    assert r.status_code in (200, 201), r.text
    return r.json()


def eur(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "EUR"}


@dataclass
class Player:
    id: str
    session_id: str


async def funded_player(
    client: httpx.AsyncClient, player_id: str = "p1", deposit: str = "100.00", currency: str = "EUR"
) -> Player:
    """A player with ``deposit`` available and an open game session."""
    await ok(client, "/v1/players", {"player_id": player_id, "currency": currency})
    if deposit != "0":
        await ok(
            client,
            f"/v1/players/{player_id}/adjustments",
            {"amount": {"amount": deposit, "currency": currency}, "reason": "deposit"},
        )
    session = await ok(client, "/v1/sessions", {"player_id": player_id})
    return Player(player_id, session["session_id"])


async def authorize(
    client: httpx.AsyncClient,
    player: Player,
    bet_id: str,
    amount: str = "2.00",
    *,
    round_id: str = "r1",
    **kw: Any,
) -> httpx.Response:
    return await write(
        client,
        "/v1/bets/authorize",
        {
            "session_id": player.session_id,
            "bet_id": bet_id,
            "round_id": round_id,
            "amount": eur(amount),
        },
        **kw,
    )


async def balance(client: httpx.AsyncClient, player_id: str = "p1") -> tuple[int, int]:
    """(available, held) in minor units."""
    r = await client.get(f"/v1/players/{player_id}/balance")
    assert r.status_code == 200, r.text
    body = r.json()
    return body["available"]["minor_units"], body["held"]["minor_units"]
