"""The wallet under concurrency, on both stores: one hold per key and per bet, and a clean
ledger after thousands of mixed operations from many clients.

On PostgreSQL the clients are spread over several croupier instances sharing the database,
as ``croupier api`` processes would be, so the cross-process guards are what is tested
(the advisory lock on the key, the player's row lock, the unique bet id), not only the
in-process ones.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from croupier.api.rest.app import create_app
from croupier.bootstrap import Container, build
from croupier.config import Settings
from croupier.domain.clock import ManualClock
from tests.conftest import ADMIN_KEY
from tests.integration.wallet_support import eur, funded_player, write

#: How many croupier instances share a PostgreSQL database in these tests.
PG_INSTANCES = 3


@pytest.fixture
async def clients(
    backend: str, settings: Settings, clock: ManualClock, client: httpx.AsyncClient
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """REST clients: one for SQLite (one process owns the file), several instances for
    PostgreSQL."""
    if backend == "sqlite":
        yield [client]
        return
    extra: list[Container] = []
    opened = [client]
    try:
        for _ in range(PG_INSTANCES - 1):
            c = await build(settings, clock=clock, rng=random.Random(3), auto_migrate=False)
            extra.append(c)
            opened.append(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=create_app(c)),
                    base_url="http://croupier.test",
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                )
            )
        yield opened
    finally:
        for h in opened[1:]:
            await h.aclose()
        for c in extra:
            await c.close()


async def test_two_hundred_authorizes_with_one_key_make_one_hold(
    clients: list[httpx.AsyncClient], container: Container
) -> None:
    player = await funded_player(clients[0])
    body = {
        "session_id": player.session_id,
        "bet_id": "b1",
        "round_id": "r1",
        "amount": eur("2.00"),
    }
    answers = await asyncio.gather(
        *(
            write(clients[n % len(clients)], "/v1/bets/authorize", body, idempotency_key="one")
            for n in range(200)
        )
    )
    holds = {r.json()["hold_id"] for r in answers if r.status_code == 200}
    assert len(holds) == 1, holds
    others = Counter(r.json()["code"] for r in answers if r.status_code != 200)
    assert set(others) <= {"IDEMPOTENCY_IN_PROGRESS"}, others
    for r in answers:
        if r.status_code != 200:
            assert r.status_code == 409 and r.json()["retryable"] is True
    assert (await clients[0].get("/v1/players/p1/balance")).json()["held"]["minor_units"] == 200
    # Once the first has finished, the key answers the same to everyone.
    late = await write(clients[-1], "/v1/bets/authorize", body, idempotency_key="one")
    assert late.json()["hold_id"] in holds
    assert (await container.wallet.check()).violations == {}


async def test_two_hundred_authorizes_of_one_bet_make_one_hold(
    clients: list[httpx.AsyncClient], container: Container
) -> None:
    player = await funded_player(clients[0])
    body = {
        "session_id": player.session_id,
        "bet_id": "b1",
        "round_id": "r1",
        "amount": eur("2.00"),
    }
    answers = await asyncio.gather(
        *(write(clients[n % len(clients)], "/v1/bets/authorize", body) for n in range(200))
    )
    codes = Counter("OK" if r.status_code == 200 else r.json()["code"] for r in answers)
    assert codes == {"OK": 1, "DUPLICATE": 199}, codes
    balance = (await clients[0].get("/v1/players/p1/balance")).json()
    assert (balance["available"]["minor_units"], balance["held"]["minor_units"]) == (9800, 200)
    assert (await container.wallet.check()).violations == {}


@dataclass
class Expected:
    """What the answers say each player's balances must be."""

    available: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    stakes: dict[str, tuple[str, int]] = field(default_factory=dict)


async def test_a_random_mix_from_twenty_clients_leaves_a_clean_ledger(
    clients: list[httpx.AsyncClient], container: Container
) -> None:
    rng = random.Random(20261121)
    players = [f"p{n:02d}" for n in range(50)]
    sessions: dict[str, str] = {}
    expected = Expected()
    for p in players:
        sessions[p] = (await funded_player(clients[0], p, deposit="50.00")).session_id
        expected.available[p] = 5000
        expected.held[p] = 0
    bets: list[str] = []
    outcomes: Counter[str] = Counter()

    async def one(client: httpx.AsyncClient, n: int) -> None:
        p = rng.choice(players)
        roll = rng.random()
        if roll < 0.45 or not bets:
            bet = f"b{n}"
            stake = rng.randint(1, 900)
            r = await write(
                client,
                "/v1/bets/authorize",
                {
                    "session_id": sessions[p],
                    "bet_id": bet,
                    "round_id": f"r{n}",
                    "amount": {"minor_units": stake, "currency": "EUR"},
                },
            )
            if r.status_code == 200:
                bets.append(bet)
                expected.stakes[bet] = (p, stake)
                expected.available[p] -= stake
                expected.held[p] += stake
        elif roll < 0.75:
            bet = rng.choice(bets)
            owner, stake = expected.stakes[bet]
            win = rng.choice([0, 0, stake * 2, rng.randint(1, 3000)])
            r = await write(
                client,
                "/v1/bets/settle",
                {
                    "bet_id": bet,
                    "round_id": f"r{bet[1:]}",
                    "win": {"minor_units": win, "currency": "EUR"},
                },
            )
            if r.status_code == 200:
                expected.held[owner] -= stake
                expected.available[owner] += win
        elif roll < 0.9:
            bet = rng.choice([*bets, f"ghost{n}"])
            r = await write(client, "/v1/bets/cancel", {"bet_id": bet})
            # A cancel of a cancelled bet answers without a transaction: nothing moved.
            moved_by = r.json().get("transaction_id") if r.status_code == 200 else None
            if moved_by is not None:
                owner, stake = expected.stakes[bet]
                expected.held[owner] -= stake
                expected.available[owner] += stake
        else:
            amount = rng.randint(1, 500)
            r = await write(
                client,
                "/v1/credits",
                {
                    "credit_id": f"c{n}",
                    "player_id": p,
                    "amount": {"minor_units": amount, "currency": "EUR"},
                    "reason": "bonus",
                },
            )
            if r.status_code == 200:
                expected.available[p] += amount
        code = "OK" if r.status_code in (200, 201) else r.json()["code"]
        outcomes[code] += 1
        assert r.status_code < 500, r.text

    queue = iter(range(2000))

    async def worker(client: httpx.AsyncClient) -> None:
        for n in queue:
            await one(client, n)

    await asyncio.wait_for(
        asyncio.gather(*(worker(clients[w % len(clients)]) for w in range(20))), 120
    )
    assert sum(outcomes.values()) == 2000
    assert outcomes["OK"] > 1000, outcomes
    report = await container.wallet.check()
    assert report.violations == {}, report.violations
    for p in players:
        got = (await clients[0].get(f"/v1/players/{p}/balance")).json()
        assert got["available"]["minor_units"] == expected.available[p], p
        assert got["held"]["minor_units"] == expected.held[p], p
