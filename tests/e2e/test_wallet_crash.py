"""Crash safety of the money: ``kill -9`` in the middle of a mix of wallet writes.

After a restart, every write that was answered is in the ledger with its events, and its
key answers the same again; every write that was not answered either happened whole (its
key now answers with it) or not at all (it runs now); and ``croupier wallet check`` is clean.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.harness import Launcher, Serve, eventually

PLAYERS = 20
CLIENTS = 20
#: Answered writes before the kill: enough that many more are in flight when it lands.
KILL_AFTER = 300


@dataclass
class Write:
    path: str
    body: dict[str, Any]
    key: str
    #: (status, body) as answered before the kill; None: no answer came.
    answer: tuple[int, dict[str, Any]] | None = None


async def _post(api: httpx.AsyncClient, w: Write) -> tuple[int, dict[str, Any]]:
    r = await api.post(w.path, json=w.body, headers={"X-Idempotency-Key": w.key})
    return r.status_code, r.json()


async def _setup(api: httpx.AsyncClient) -> dict[str, str]:
    sessions: dict[str, str] = {}
    for n in range(PLAYERS):
        player = f"p{n}"
        for path, body in (
            ("/v1/players", {"player_id": player, "currency": "EUR"}),
            (
                f"/v1/players/{player}/adjustments",
                {"amount": {"amount": "100.00", "currency": "EUR"}, "reason": "deposit"},
            ),
            ("/v1/sessions", {"player_id": player, "ttl_seconds": 86400}),
        ):
            status, answer = await _post(api, Write(path, body, f"setup-{player}-{path}"))
            assert status in (200, 201), answer
            if path == "/v1/sessions":
                sessions[player] = answer["session_id"]
    return sessions


def _next_write(rng: random.Random, n: int, sessions: dict[str, str], bets: list[str]) -> Write:
    player = f"p{rng.randrange(PLAYERS)}"
    roll = rng.random()
    if roll < 0.5 or not bets:
        bet = f"b{n}"
        bets.append(bet)
        body: dict[str, Any] = {
            "session_id": sessions[player],
            "bet_id": bet,
            "round_id": f"r{n}",
            "amount": {"minor_units": rng.randint(1, 500), "currency": "EUR"},
        }
        return Write("/v1/bets/authorize", body, f"k{n}")
    if roll < 0.8:
        bet = rng.choice(bets)
        win = {"minor_units": rng.choice([0, 100, 1000]), "currency": "EUR"}
        return Write(
            "/v1/bets/settle", {"bet_id": bet, "round_id": f"r{bet[1:]}", "win": win}, f"k{n}"
        )
    if roll < 0.9:
        return Write("/v1/bets/cancel", {"bet_id": rng.choice(bets)}, f"k{n}")
    body = {
        "credit_id": f"c{n}",
        "player_id": player,
        "amount": {"minor_units": rng.randint(1, 300), "currency": "EUR"},
        "reason": "prize_payout",
        "campaign_id": "crash",
    }
    return Write("/v1/credits", body, f"k{n}")


async def _run_until_killed(serve: Serve, sessions: dict[str, str]) -> list[Write]:
    rng = random.Random(77)
    bets: list[str] = []
    writes: list[Write] = []
    answered = 0
    numbers = iter(range(100_000))

    async def client() -> None:
        nonlocal answered
        async with serve.api() as api:
            for n in numbers:
                w = _next_write(rng, n, sessions, bets)
                writes.append(w)
                try:
                    w.answer = await _post(api, w)
                except httpx.TransportError:
                    return  # the server is gone: this write has no answer
                answered += 1

    tasks = [asyncio.create_task(client()) for _ in range(CLIENTS)]
    await eventually(lambda: answered >= KILL_AFTER, within_s=60, what=f"{KILL_AFTER} answers")
    serve.kill()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    return writes


def _not_kept(w: Write, body: dict[str, Any]) -> bool:
    """Answers a key does not keep: retryable ones, and a settle that found no bet (it
    changed nothing; the same key may be sent again once the bet exists)."""
    return bool(body.get("retryable")) or (
        w.path == "/v1/bets/settle" and body.get("code") == "BET_NOT_FOUND"
    )


def _untraced(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "trace_id"}


async def _all(api: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(10_000):
        params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
        page = (await api.get(path, params=params)).json()
        out.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return out
    raise AssertionError(f"{path}: no end of pages")


@pytest.mark.slow
async def test_after_kill_9_every_answered_write_is_whole_and_no_other_is_half_done(
    launcher: Launcher,
) -> None:
    first = await launcher.serve(dispatcher_enabled=False)
    async with first.api() as api:
        sessions = await _setup(api)
    writes = await _run_until_killed(first, sessions)
    await first.wait_exit(within_s=10)
    unanswered = [w for w in writes if w.answer is None]
    assert len(writes) - len(unanswered) >= KILL_AFTER
    assert unanswered, "the kill landed when nothing was in flight"

    second = await launcher.serve(dispatcher_enabled=False)
    async with second.api() as api:
        # Before anything else runs: the ledger as the kill left it is consistent.
        check = await launcher.run("wallet", "check", "--json")
        assert check.code == 0, check.text
        report = orjson.loads(check.stdout)
        assert report["ok"] is True and report["violations"] == {}

        transactions: dict[str, dict[str, Any]] = {}
        for n in range(PLAYERS):
            for tx in await _all(api, f"/v1/players/p{n}/transactions"):
                transactions[tx["id"]] = tx
        events = await _all(api, "/v1/events")
        by_transaction: dict[str, set[str]] = {}
        for e in events:
            data = e["data"]
            tx_id = data.get("transactionId") or data.get("transaction_id")
            if tx_id is not None:
                by_transaction.setdefault(tx_id, set()).add(e["type"])

        for w in writes:
            if w.answer is None:
                continue
            status, body = w.answer
            if _not_kept(w, body):
                continue
            again_status, again_body = await _post(api, w)
            # The same answer; only the trace id is the new request's own.
            again_body.pop("trace_id", None)
            assert (again_status, again_body) == (status, _untraced(body)), (w, again_body)
            tx_id = body.get("transaction_id")
            if status == 200 and tx_id is not None:
                assert tx_id in transactions, (w, body)
                expected = {
                    "/v1/bets/authorize": {"wallet.bet_placed"},
                    "/v1/bets/settle": {"wallet.win_credited", "bet.settled"},
                    "/v1/bets/cancel": {"wallet.rollback"},
                    "/v1/credits": {"wallet.credit.ok"},
                }[w.path]
                assert expected <= by_transaction.get(tx_id, set()), (w, body)

        # Every movement in the ledger, answered or not, came with its events.
        for tx_id, tx in transactions.items():
            if tx["kind"] != "adjustment":
                assert tx_id in by_transaction, tx

        # The unanswered ones: each either committed whole before the kill (its key now
        # answers with a transaction already in the ledger) or left nothing and runs now.
        replayed = [await _post(api, w) for w in unanswered]
        after: set[str] = set()
        for n in range(PLAYERS):
            after |= {tx["id"] for tx in await _all(api, f"/v1/players/p{n}/transactions")}
        committed_before = 0
        for w, (status, body) in zip(unanswered, replayed, strict=True):
            assert status < 500, (w, body)
            tx_id = body.get("transaction_id")
            if status == 200 and tx_id is not None:
                assert tx_id in after, (w, body)
                committed_before += tx_id in transactions
        assert committed_before <= len(unanswered)

    final = await launcher.run("wallet", "check")
    assert final.code == 0, final.text
    assert "every invariant holds" in final.text
    await second.stop()
