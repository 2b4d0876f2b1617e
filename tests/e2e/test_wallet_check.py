"""``croupier wallet check`` on a real database: clean when the ledger holds, exit 1 with the
violation named when it does not."""

from __future__ import annotations

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from croupier.store.engine import open_database
from tests.e2e.harness import Launcher


async def _write(
    api: httpx.AsyncClient, path: str, body: dict[str, object], key: str
) -> dict[str, object]:
    r = await api.post(path, json=body, headers={"X-Idempotency-Key": key})
    assert r.status_code in (200, 201), r.text
    answer: dict[str, object] = r.json()
    return answer


async def _tamper(url: str, sql: str) -> None:
    db = open_database(url)

    def run(conn: Connection) -> None:
        conn.execute(text(sql))

    try:
        await db.run(run)
    finally:
        await db.close()


@pytest.mark.slow
async def test_the_check_names_a_balance_that_disagrees_with_its_postings(
    launcher: Launcher,
) -> None:
    serve = await launcher.serve(dispatcher_enabled=False)
    async with serve.api() as api:
        await _write(api, "/v1/players", {"player_id": "p1", "currency": "EUR"}, "k1")
        await _write(
            api,
            "/v1/players/p1/adjustments",
            {"amount": {"amount": "10.00", "currency": "EUR"}, "reason": "deposit"},
            "k2",
        )
        session = await _write(api, "/v1/sessions", {"player_id": "p1"}, "k3")
        await _write(
            api,
            "/v1/bets/authorize",
            {
                "session_id": session["session_id"],
                "bet_id": "b1",
                "round_id": "r1",
                "amount": {"amount": "2.00", "currency": "EUR"},
            },
            "k4",
        )
    await serve.stop()

    clean = await launcher.run("wallet", "check")
    assert clean.code == 0, clean.text
    assert "1 players" in clean.text and "every invariant holds" in clean.text

    await _tamper(launcher.database_url, "UPDATE players SET available = available + 1")
    dirty = await launcher.run("wallet", "check")
    assert dirty.code == 1, dirty.text
    assert "balance differs from its postings" in dirty.text
    assert "player p1: stored 801/200, postings 800/200" in dirty.text

    await _tamper(launcher.database_url, "UPDATE bets SET status = 'settled'")
    report = await launcher.run("wallet", "check", "--json")
    assert report.code == 1
    found = orjson.loads(report.stdout)
    assert found["ok"] is False
    assert set(found["violations"]) == {
        "balance differs from its postings",
        "held differs from open bets",
        "hold resolved other than once",
    }
