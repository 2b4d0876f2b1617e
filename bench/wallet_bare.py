"""The wallet benchmark's baseline: croupier's two transactions, written with the bare driver.

``bench/wallet.py`` runs this file as its own process, once per measurement, on a database
that ``croupier migrate`` made (so the tables, indexes and constraints are croupier's):

    wallet_bare.py setup      sqlite|postgres URL --players N
    wallet_bare.py throughput sqlite|postgres URL --players N --pairs P --clients C ...
    wallet_bare.py latency    sqlite|postgres URL --players N --rate R --seconds S ...

and reads the last line it prints, a JSON object. ``setup`` inserts a tenant, N players with
money and one live game session each; the other two run authorize+settle pairs.

The two transactions are croupier's, statement for statement (see
``croupier.services.wallet`` and ``croupier.store.wallet``), with no SQLAlchemy, no HTTP and
no framework:

* authorize: (PostgreSQL: ``pg_try_advisory_xact_lock`` on the idempotency key) read the
  key's idempotency record; read the bet; read the session; read and lock the player's row
  (``SELECT ... FOR UPDATE`` on PostgreSQL); read the bet again under the lock; insert the
  bet; insert the wallet transaction (``RETURNING seq``) and its two postings; update the
  player's balances; look up the subscribed endpoints; insert the ``wallet.bet_placed``
  event; insert the idempotency record with the request's fingerprint and the answer;
* settle: the lock and the record read; read the bet; read and lock its player; read the
  bet again; resolve it (``UPDATE ... WHERE status = 'authorized'``); insert the transaction
  and its postings (two for a loss, four for a win); update the balances; look up the
  endpoints once per event type; insert ``wallet.win_credited`` and ``bet.settled`` in one
  statement; insert the idempotency record.

The fingerprint (SHA-256 of the canonical request), the stored answer and the event payloads
are JSON of the same shape and size as croupier's. SQLite runs as croupier runs it: WAL,
``synchronous=NORMAL``, foreign keys on, one connection whose write transactions start with
``BEGIN IMMEDIATE``, one transaction at a time. PostgreSQL runs on an asyncpg pool as large
as croupier's (at most 20 connections) with C concurrent workers, each on its own players.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

TENANT = "ten_bench_bare"
CURRENCY = "EUR"
EXPONENT = 2
#: Every bet stakes 1.00 EUR; every other one wins 2.00 (a settle with four postings), the
#: others lose (two postings). croupier's runs use the same amounts.
STAKE = 100
DEPOSIT = 100_000_000
SESSION_TTL_MS = 86_400_000
IDEMPOTENCY_TTL_MS = 7 * 86_400_000
SCHEMA_VERSION = "1.0.0"
#: croupier's PostgreSQL pool: 10 connections and 10 more on overflow.
MAX_POOL = 20
WARMUP_PAIRS_PER_CLIENT = 2
#: An open-loop run gives up on pairs still open this long after the last start.
SETTLE_S = 20.0


def win_of(seq: int) -> int:
    """The win of pair ``seq``: 2.00 for odd pairs, a loss for even ones."""
    return 2 * STAKE if seq % 2 else 0


def player_id(i: int) -> str:
    return f"bench-p{i:04d}"


def session_id(i: int) -> str:
    return f"bare-ses{i:04d}"


#: The statements, in PostgreSQL's ``$n`` style; SQLite takes the same text as ``?n``.
SQL = {
    "lock_key": "SELECT pg_try_advisory_xact_lock($1)",
    "record": "SELECT fingerprint, outcome FROM idempotency_records "
    "WHERE tenant_id = $1 AND key = $2",
    "bet": "SELECT tenant_id, id, player_id, round_id, session_id, hold_id, amount, currency, "
    "status, win, created_at, updated_at FROM bets WHERE tenant_id = $1 AND id = $2",
    "session": "SELECT id, tenant_id, player_id, created_at, expires_at FROM wallet_sessions "
    "WHERE tenant_id = $1 AND id = $2",
    "player": "SELECT tenant_id, id, currency, available, held, created_at, updated_at "
    "FROM players WHERE tenant_id = $1 AND id = $2",
    "add_bet": "INSERT INTO bets (tenant_id, id, status, player_id, round_id, session_id, "
    "hold_id, amount, currency, win, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    "resolve_bet": "UPDATE bets SET status = $1, win = $2, updated_at = $3 "
    "WHERE tenant_id = $4 AND id = $5 AND status = 'authorized'",
    "add_transaction": "INSERT INTO wallet_transactions (id, tenant_id, player_id, kind, "
    "reference, round_id, amount, currency, available_after, held_after, reason, trace_id, "
    "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING seq",
    "add_posting": "INSERT INTO postings (tenant_id, transaction_seq, account, player_id, "
    "currency, amount) VALUES ($1, $2, $3, $4, $5, $6)",
    "set_balances": "UPDATE players SET available = $1, held = $2, updated_at = $3 "
    "WHERE tenant_id = $4 AND id = $5",
    "subscribed": "SELECT id, ordered, event_types FROM endpoints "
    "WHERE tenant_id = $1 AND deleted_at IS NULL AND disabled = false",
    "save_record": "INSERT INTO idempotency_records (tenant_id, key, fingerprint, outcome, "
    "created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
}
_EVENT_COLUMNS = (
    "id, tenant_id, type, schema_version, data, ordering_key, occurred_at, created_at, "
    "idempotency_key, fingerprint, trace_id, delivery_count"
)


def add_events_sql(rows: int) -> str:
    """One INSERT of ``rows`` events, as croupier sends them: ``RETURNING seq``."""
    values = ", ".join(
        "(" + ", ".join(f"${12 * r + c}" for c in range(1, 13)) + ")" for r in range(rows)
    )
    # Built from constants only: no value of a request ever goes into the text.
    return f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES {values} RETURNING seq"  # noqa: S608


def _sqlite(sql: str) -> str:
    return sql.replace("$", "?")


# -- what both drivers compute ---------------------------------------------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(13).hex()}"


def _money(minor: int) -> str:
    sign, minor = ("-", -minor) if minor < 0 else ("", minor)
    return f"{sign}{minor // 100}.{minor % 100:02d}"


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _fingerprint(*fields: Any) -> str:
    return hashlib.sha256(orjson.dumps(list(fields))).hexdigest()


def _lock_number(key: str) -> int:
    digest = hashlib.sha256(f"{TENANT}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _outcome(status: str, player: str, balances: tuple[int, int], ids: dict[str, str]) -> str:
    """The answer an idempotency record keeps, as croupier stores it."""
    result = {
        "status": status,
        "player_id": player,
        "currency": CURRENCY,
        "exponent": EXPONENT,
        "available": balances[0],
        "held": balances[1],
        **ids,
    }
    return orjson.dumps({"result": result}).decode()


def _event_row(
    type_: str, data: dict[str, Any], player: str, trace_id: str, now: int
) -> tuple[Any, ...]:
    raw = orjson.dumps(data)
    return (
        _new_id("evt"),
        TENANT,
        type_,
        SCHEMA_VERSION,
        raw.decode(),
        player,
        now,
        now,
        None,
        hashlib.sha256(raw).hexdigest(),
        trace_id,
        0,
    )


@dataclass(frozen=True)
class Pair:
    """One authorize+settle: its ids and amounts."""

    seq: int
    player: str
    session: str
    bet_id: str
    round_id: str
    authorize_key: str
    settle_key: str
    win: int

    @classmethod
    def make(cls, prefix: str, seq: int, players: int) -> Pair:
        """Pair ``seq`` of a run: player ``seq % players``; ids unique under ``prefix``."""
        i = seq % players
        return cls(
            seq=seq,
            player=player_id(i),
            session=session_id(i),
            bet_id=f"{prefix}-b{seq}",
            round_id=f"{prefix}-r{seq}",
            authorize_key=f"{prefix}-a{seq}",
            settle_key=f"{prefix}-s{seq}",
            win=win_of(seq),
        )


def _bet_row(p: Pair, player: str, hold_id: str, now: int) -> tuple[Any, ...]:
    """The bet an authorize inserts (``SQL["add_bet"]``)."""
    bet = (TENANT, p.bet_id, "authorized", player, p.round_id, p.session, hold_id)
    return (*bet, STAKE, CURRENCY, None, now, now)


def _transaction_row(
    p: Pair, tx_id: str, player: str, kind: str, amount: int, balances: tuple[int, int], now: int
) -> tuple[Any, ...]:
    """A wallet transaction (``SQL["add_transaction"]``), with a trace id as each request has."""
    head = (tx_id, TENANT, player, kind, p.bet_id, p.round_id, amount, CURRENCY)
    return (*head, *balances, None, os.urandom(16).hex(), now)


def _record_row(key: str, fingerprint: str, outcome: str, now: int) -> tuple[Any, ...]:
    """An idempotency record (``SQL["save_record"]``)."""
    return (TENANT, key, fingerprint, outcome, now, now + IDEMPOTENCY_TTL_MS)


def _authorize_postings(seq: int, player: str) -> list[tuple[Any, ...]]:
    return [
        (TENANT, seq, "available", player, CURRENCY, -STAKE),
        (TENANT, seq, "held", player, CURRENCY, STAKE),
    ]


def _settle_postings(seq: int, player: str, stake: int, win: int) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = [
        (TENANT, seq, "held", player, CURRENCY, -stake),
        (TENANT, seq, "house", "", CURRENCY, stake),
    ]
    if win:
        rows += [
            (TENANT, seq, "house", "", CURRENCY, -win),
            (TENANT, seq, "available", player, CURRENCY, win),
        ]
    return rows


def _bet_placed(
    p: Pair, player: str, tx_id: str, available: int, trace_id: str, now: int
) -> tuple[Any, ...]:
    data = {
        "transactionId": tx_id,
        "betId": p.bet_id,
        "roundId": p.round_id,
        "playerId": player,
        "amount": _money(STAKE),
        "currency": CURRENCY,
        "balance": _money(available),
        "createdAt": _iso(now),
    }
    return _event_row("wallet.bet_placed", data, player, trace_id, now)


def _settle_events(
    p: Pair, player: str, stake: int, tx_id: str, available: int, trace_id: str, now: int
) -> tuple[Any, ...]:
    credited = {
        "transactionId": tx_id,
        "betId": p.bet_id,
        "roundId": p.round_id,
        "playerId": player,
        "amount": _money(p.win),
        "currency": CURRENCY,
        "balance": _money(available),
        "createdAt": _iso(now),
    }
    settled = {
        "bet_id": p.bet_id,
        "round_id": p.round_id,
        "player_id": player,
        "amount": {"minor_units": stake, "currency": CURRENCY},
        "win": {"minor_units": p.win, "currency": CURRENCY},
        "transaction_id": tx_id,
    }
    return (
        *_event_row("wallet.win_credited", credited, player, trace_id, now),
        *_event_row("bet.settled", settled, player, trace_id, now),
    )


def _authorize_record(
    p: Pair, player: str, balances: tuple[int, int], ids: dict[str, str], now: int
) -> tuple[Any, ...]:
    fingerprint = _fingerprint("authorize", p.session, p.bet_id, p.round_id, STAKE, CURRENCY, None)
    outcome = _outcome("authorized", player, balances, {"bet_id": p.bet_id, **ids})
    return _record_row(p.authorize_key, fingerprint, outcome, now)


def _settle_record(
    p: Pair, player: str, balances: tuple[int, int], ids: dict[str, str], now: int
) -> tuple[Any, ...]:
    fingerprint = _fingerprint("settle", p.bet_id, p.round_id, p.win, CURRENCY, None)
    outcome = _outcome("settled", player, balances, {"bet_id": p.bet_id, **ids})
    return _record_row(p.settle_key, fingerprint, outcome, now)


class Refused(RuntimeError):
    """A pair that did not go through (it should never happen in the bench)."""


# -- SQLite: sqlite3, one connection -----------------------------------------------------------


class SqliteWallet:
    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=30000",
        ):
            self.conn.execute(pragma)
        self.sql = {name: _sqlite(text) for name, text in SQL.items()}
        self.add_events = {n: _sqlite(add_events_sql(n)) for n in (1, 2)}

    def close(self) -> None:
        self.conn.close()

    def setup(self, players: int) -> None:
        now = _now_ms()
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        c.execute(_sqlite(SETUP_TENANT), (TENANT, TENANT, now))
        c.executemany(_sqlite(SETUP_PLAYER), _players(players, now))
        c.executemany(_sqlite(SETUP_SESSION), _sessions(players, now))
        c.execute("COMMIT")

    def authorize(self, p: Pair) -> None:
        c, sql = self.conn, self.sql
        c.execute("BEGIN IMMEDIATE")
        try:
            now = _now_ms()
            if c.execute(sql["record"], (TENANT, p.authorize_key)).fetchone() is not None:
                raise Refused("the key has a record")
            if c.execute(sql["bet"], (TENANT, p.bet_id)).fetchone() is not None:
                raise Refused("the bet exists")
            session = c.execute(sql["session"], (TENANT, p.session)).fetchone()
            if session is None or session[4] <= now:
                raise Refused("no live session")
            player = session[2]
            account = c.execute(sql["player"], (TENANT, player)).fetchone()
            if c.execute(sql["bet"], (TENANT, p.bet_id)).fetchone() is not None:
                raise Refused("the bet exists")
            balances = (account[3] - STAKE, account[4] + STAKE)
            if balances[0] < 0:
                raise Refused("insufficient funds")
            tx_id, hold_id = _new_id("wtx"), _new_id("hld")
            c.execute(sql["add_bet"], _bet_row(p, player, hold_id, now))
            tx = _transaction_row(p, tx_id, player, "bet", STAKE, balances, now)
            seq = c.execute(sql["add_transaction"], tx).fetchone()[0]
            c.executemany(sql["add_posting"], _authorize_postings(seq, player))
            c.execute(sql["set_balances"], (*balances, now, TENANT, player))
            c.execute(sql["subscribed"], (TENANT,)).fetchall()
            event = _bet_placed(p, player, tx_id, balances[0], tx[11], now)
            c.execute(self.add_events[1], event).fetchall()
            ids = {"hold_id": hold_id, "transaction_id": tx_id}
            c.execute(sql["save_record"], _authorize_record(p, player, balances, ids, now))
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def settle(self, p: Pair) -> None:
        c, sql = self.conn, self.sql
        c.execute("BEGIN IMMEDIATE")
        try:
            now = _now_ms()
            if c.execute(sql["record"], (TENANT, p.settle_key)).fetchone() is not None:
                raise Refused("the key has a record")
            bet = c.execute(sql["bet"], (TENANT, p.bet_id)).fetchone()
            if bet is None:
                raise Refused("no such bet")
            player = bet[2]
            account = c.execute(sql["player"], (TENANT, player)).fetchone()
            bet = c.execute(sql["bet"], (TENANT, p.bet_id)).fetchone()
            if bet[8] != "authorized" or bet[3] != p.round_id:
                raise Refused(f"the bet is {bet[8]}")
            stake = bet[6]
            balances = (account[3] + p.win, account[4] - stake)
            tx_id = _new_id("wtx")
            done = c.execute(sql["resolve_bet"], ("settled", p.win, now, TENANT, p.bet_id))
            if done.rowcount != 1:
                raise Refused("the bet changed meanwhile")
            tx = _transaction_row(p, tx_id, player, "settle", p.win, balances, now)
            seq = c.execute(sql["add_transaction"], tx).fetchone()[0]
            c.executemany(sql["add_posting"], _settle_postings(seq, player, stake, p.win))
            c.execute(sql["set_balances"], (*balances, now, TENANT, player))
            for _ in range(2):  # one lookup per event type, as croupier does
                c.execute(sql["subscribed"], (TENANT,)).fetchall()
            events = _settle_events(p, player, stake, tx_id, balances[0], tx[11], now)
            c.execute(self.add_events[2], events).fetchall()
            ids = {"hold_id": bet[5], "transaction_id": tx_id}
            c.execute(sql["save_record"], _settle_record(p, player, balances, ids, now))
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")


SETUP_TENANT = (
    "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
)
SETUP_PLAYER = (
    "INSERT INTO players (tenant_id, id, currency, available, held, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, 0, $5, $6) ON CONFLICT DO NOTHING"
)
SETUP_SESSION = (
    "INSERT INTO wallet_sessions (id, tenant_id, player_id, created_at, expires_at) "
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"
)


def _players(players: int, now: int) -> list[tuple[Any, ...]]:
    return [(TENANT, player_id(i), CURRENCY, DEPOSIT, now, now) for i in range(players)]


def _sessions(players: int, now: int) -> list[tuple[Any, ...]]:
    end = now + SESSION_TTL_MS
    return [(session_id(i), TENANT, player_id(i), now, end) for i in range(players)]


# -- PostgreSQL: asyncpg, a pool ---------------------------------------------------------------


class PostgresWallet:
    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.lock_player = SQL["player"] + " FOR UPDATE"
        self.add_events = {n: add_events_sql(n) for n in (1, 2)}

    @classmethod
    async def open(cls, url: str, size: int) -> PostgresWallet:
        import asyncpg

        pool = await asyncpg.create_pool(url, min_size=size, max_size=size)
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    async def setup(self, players: int) -> None:
        now = _now_ms()
        async with self.pool.acquire() as c, c.transaction():
            await c.execute(SETUP_TENANT, TENANT, TENANT, now)
            await c.executemany(SETUP_PLAYER, _players(players, now))
            await c.executemany(SETUP_SESSION, _sessions(players, now))

    async def authorize(self, p: Pair) -> None:
        async with self.pool.acquire() as c, c.transaction():
            now = _now_ms()
            if not await c.fetchval(SQL["lock_key"], _lock_number(p.authorize_key)):
                raise Refused("the key is held")
            if await c.fetchrow(SQL["record"], TENANT, p.authorize_key) is not None:
                raise Refused("the key has a record")
            if await c.fetchrow(SQL["bet"], TENANT, p.bet_id) is not None:
                raise Refused("the bet exists")
            session = await c.fetchrow(SQL["session"], TENANT, p.session)
            if session is None or session[4] <= now:
                raise Refused("no live session")
            player = session[2]
            account = await c.fetchrow(self.lock_player, TENANT, player)
            if await c.fetchrow(SQL["bet"], TENANT, p.bet_id) is not None:
                raise Refused("the bet exists")
            balances = (account[3] - STAKE, account[4] + STAKE)
            if balances[0] < 0:
                raise Refused("insufficient funds")
            tx_id, hold_id = _new_id("wtx"), _new_id("hld")
            await c.execute(SQL["add_bet"], *_bet_row(p, player, hold_id, now))
            tx = _transaction_row(p, tx_id, player, "bet", STAKE, balances, now)
            seq = await c.fetchval(SQL["add_transaction"], *tx)
            await c.executemany(SQL["add_posting"], _authorize_postings(seq, player))
            await c.execute(SQL["set_balances"], *balances, now, TENANT, player)
            await c.fetch(SQL["subscribed"], TENANT)
            event = _bet_placed(p, player, tx_id, balances[0], tx[11], now)
            await c.fetch(self.add_events[1], *event)
            ids = {"hold_id": hold_id, "transaction_id": tx_id}
            await c.execute(SQL["save_record"], *_authorize_record(p, player, balances, ids, now))

    async def settle(self, p: Pair) -> None:
        async with self.pool.acquire() as c, c.transaction():
            now = _now_ms()
            if not await c.fetchval(SQL["lock_key"], _lock_number(p.settle_key)):
                raise Refused("the key is held")
            if await c.fetchrow(SQL["record"], TENANT, p.settle_key) is not None:
                raise Refused("the key has a record")
            bet = await c.fetchrow(SQL["bet"], TENANT, p.bet_id)
            if bet is None:
                raise Refused("no such bet")
            player = bet[2]
            account = await c.fetchrow(self.lock_player, TENANT, player)
            bet = await c.fetchrow(SQL["bet"], TENANT, p.bet_id)
            if bet[8] != "authorized" or bet[3] != p.round_id:
                raise Refused(f"the bet is {bet[8]}")
            stake = bet[6]
            balances = (account[3] + p.win, account[4] - stake)
            tx_id = _new_id("wtx")
            done = await c.execute(SQL["resolve_bet"], "settled", p.win, now, TENANT, p.bet_id)
            if done != "UPDATE 1":
                raise Refused("the bet changed meanwhile")
            tx = _transaction_row(p, tx_id, player, "settle", p.win, balances, now)
            seq = await c.fetchval(SQL["add_transaction"], *tx)
            await c.executemany(SQL["add_posting"], _settle_postings(seq, player, stake, p.win))
            await c.execute(SQL["set_balances"], *balances, now, TENANT, player)
            for _ in range(2):  # one lookup per event type, as croupier does
                await c.fetch(SQL["subscribed"], TENANT)
            events = _settle_events(p, player, stake, tx_id, balances[0], tx[11], now)
            await c.fetch(self.add_events[2], *events)
            ids = {"hold_id": bet[5], "transaction_id": tx_id}
            await c.execute(SQL["save_record"], *_settle_record(p, player, balances, ids, now))


# -- measuring -------------------------------------------------------------------------------


@dataclass
class Tally:
    """Pairs done, failures, and each one's timings (seconds)."""

    ok: int = 0
    errors: int = 0
    first_error: str | None = None
    authorize_s: list[float] = field(default_factory=list)
    settle_s: list[float] = field(default_factory=list)
    #: scheduled start (open loop) or actual start (closed loop) to the settle's end
    pair_s: list[float] = field(default_factory=list)
    #: open loop only: the authorize's actual start to the settle's end
    service_s: list[float] = field(default_factory=list)

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"[:300]

    def add(self, start: float, mid: float, end: float, scheduled: float | None = None) -> None:
        """A pair that went through: authorize from ``start`` to ``mid``, settle to ``end``."""
        self.ok += 1
        self.authorize_s.append(mid - start)
        self.settle_s.append(end - mid)
        if scheduled is None:
            self.pair_s.append(end - start)
        else:
            self.pair_s.append(end - scheduled)
            self.service_s.append(end - start)

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pairs_ok": self.ok,
            "errors": self.errors,
            "first_error": self.first_error,
            "pair_ms": distribution(self.pair_s),
            "authorize_ms": distribution(self.authorize_s),
            "settle_ms": distribution(self.settle_s),
        }
        if self.service_s:
            out["pair_from_actual_start_ms"] = distribution(self.service_s)
        return out


def distribution(seconds: Sequence[float]) -> dict[str, float]:
    """count, mean, p50, p95, p99, max in milliseconds (nearest rank)."""
    values = sorted(s * 1000 for s in seconds)
    n = len(values)
    if not n:
        return {"count": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}

    def rank(pct: float) -> float:
        return values[min(n - 1, max(0, -(-int(pct * n) // 100) - 1))]

    return {
        "count": n,
        "mean": sum(values) / n,
        "p50": rank(50),
        "p95": rank(95),
        "p99": rank(99),
        "max": values[-1],
    }


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sqlite_throughput(w: SqliteWallet, a: argparse.Namespace) -> dict[str, Any]:
    """One connection, one transaction at a time: pairs back to back."""
    for seq in range(WARMUP_PAIRS_PER_CLIENT):
        pair = Pair.make(f"{a.prefix}w", seq, a.players)
        w.authorize(pair)
        w.settle(pair)
    tally = Tally()
    t0 = time.perf_counter()
    deadline = t0 + a.max_seconds
    cpu0 = _cpu_s()
    seq = 0
    while seq < a.pairs and time.perf_counter() < deadline:
        pair = Pair.make(a.prefix, seq, a.players)
        seq += 1
        start = time.perf_counter()
        try:
            w.authorize(pair)
            mid = time.perf_counter()
            w.settle(pair)
        except (sqlite3.Error, Refused) as exc:
            tally.failed(exc)
            continue
        tally.add(start, mid, time.perf_counter())
    seconds = time.perf_counter() - t0
    return _throughput_out(tally, seq, seconds, _cpu_s() - cpu0, clients=1)


def sqlite_latency(w: SqliteWallet, a: argparse.Namespace) -> dict[str, Any]:
    """Pairs on a fixed schedule; one connection serves them in order, so a pair that starts
    late because the one before ran long counts its wait."""
    warm, total = int(a.rate * a.warmup_seconds), int(a.rate * (a.warmup_seconds + a.seconds))
    tally, lag = Tally(), 0.0
    origin = time.perf_counter() + 0.05
    cpu0 = _cpu_s()
    done = 0
    for seq in range(total):
        scheduled = origin + seq / a.rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            lag = max(lag, -delay)
        if -delay > 5.0:
            break
        pair = Pair.make(a.prefix, seq, a.players)
        start = time.perf_counter()
        try:
            w.authorize(pair)
            mid = time.perf_counter()
            w.settle(pair)
        except (sqlite3.Error, Refused) as exc:
            tally.failed(exc)
            continue
        end = time.perf_counter()
        done += 1
        if seq >= warm:
            tally.add(start, mid, end, scheduled)
    return _latency_out(tally, a, warm, total, done, lag, _cpu_s() - cpu0, abandoned=0)


async def postgres_throughput(w: PostgresWallet, a: argparse.Namespace) -> dict[str, Any]:
    clients = max(1, min(a.clients, a.players))

    async def warm(client: int) -> None:
        for k in range(WARMUP_PAIRS_PER_CLIENT):
            pair = Pair.make(f"{a.prefix}w", client + clients * k, a.players)
            await w.authorize(pair)
            await w.settle(pair)

    await asyncio.gather(*(warm(c) for c in range(clients)))
    tally = Tally()
    issued = 0
    t0 = time.perf_counter()
    deadline = t0 + a.max_seconds
    cpu0 = _cpu_s()

    async def worker(client: int) -> None:
        # Client c takes the players c, c + C, c + 2C ...: its pairs never wait for another
        # client's on a player's lock.
        nonlocal issued
        mine = list(range(client, a.players, clients))
        k = 0
        while issued < a.pairs and time.perf_counter() < deadline:
            issued += 1
            seq = mine[k % len(mine)] + a.players * (k // len(mine))
            k += 1
            pair = Pair.make(a.prefix, seq, a.players)
            start = time.perf_counter()
            try:
                await w.authorize(pair)
                mid = time.perf_counter()
                await w.settle(pair)
            except Exception as exc:  # asyncpg's errors, and Refused
                tally.failed(exc)
                continue
            tally.add(start, mid, time.perf_counter())

    await asyncio.gather(*(worker(c) for c in range(clients)))
    seconds = time.perf_counter() - t0
    return _throughput_out(tally, issued, seconds, _cpu_s() - cpu0, clients=clients)


async def postgres_latency(w: PostgresWallet, a: argparse.Namespace) -> dict[str, Any]:
    warm, total = int(a.rate * a.warmup_seconds), int(a.rate * (a.warmup_seconds + a.seconds))
    tally, lag, done = Tally(), 0.0, 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(seq: int, scheduled: float) -> None:
        nonlocal done
        pair = Pair.make(a.prefix, seq, a.players)
        start = time.perf_counter()
        try:
            await w.authorize(pair)
            mid = time.perf_counter()
            await w.settle(pair)
        except Exception as exc:  # asyncpg's errors, and Refused
            tally.failed(exc)
            return
        end = time.perf_counter()
        done += 1
        if seq >= warm:
            tally.add(start, mid, end, scheduled)

    origin = time.perf_counter() + 0.05
    cpu0 = _cpu_s()
    for seq in range(total):
        scheduled = origin + seq / a.rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            lag = max(lag, -delay)
        if -delay > 5.0:
            break
        task = asyncio.create_task(one(seq, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    abandoned = 0
    if tasks:
        _, late = await asyncio.wait(set(tasks), timeout=SETTLE_S)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
        abandoned = len(late)
    return _latency_out(tally, a, warm, total, done, lag, _cpu_s() - cpu0, abandoned=abandoned)


def _throughput_out(
    tally: Tally, issued: int, seconds: float, cpu_s: float, *, clients: int
) -> dict[str, Any]:
    return {
        "pairs_issued": issued,
        "seconds": seconds,
        "pairs_per_s": tally.ok / seconds if seconds > 0 else 0.0,
        "clients": clients,
        "cpu_s": cpu_s,
        "cpu_us_per_pair": 1e6 * cpu_s / tally.ok if tally.ok else None,
        **tally.report(),
    }


def _latency_out(
    tally: Tally,
    a: argparse.Namespace,
    warm: int,
    total: int,
    done: int,
    lag: float,
    cpu_s: float,
    *,
    abandoned: int,
) -> dict[str, Any]:
    measured = total - warm
    return {
        "offered_pairs_per_s": a.rate,
        "warmup_pairs": warm,
        "measured_pairs": measured,
        "pairs_done": done,
        "completed_share": tally.ok / measured if measured else 0.0,
        "abandoned": abandoned,
        "max_schedule_lag_ms": lag * 1000,
        "cpu_s": cpu_s,
        "cpu_us_per_pair": 1e6 * cpu_s / done if done else None,
        **tally.report(),
    }


# -- entry -----------------------------------------------------------------------------------


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("mode", choices=("setup", "throughput", "latency"))
    p.add_argument("store", choices=("sqlite", "postgres"))
    p.add_argument("url", help="a SQLite file path, or a postgresql:// URL")
    p.add_argument("--players", type=int, default=200)
    p.add_argument("--pairs", type=int, default=4000)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--max-seconds", type=float, default=60.0, help="throughput: time bound")
    p.add_argument("--rate", type=float, default=300.0, help="latency: pairs per second")
    p.add_argument("--seconds", type=float, default=10.0, help="latency: measured seconds")
    p.add_argument("--warmup-seconds", type=float, default=2.0)
    p.add_argument("--prefix", default="bare", help="makes this run's bet ids and keys unique")
    return p.parse_args(argv)


async def _postgres(a: argparse.Namespace) -> dict[str, Any]:
    w = await PostgresWallet.open(a.url, max(1, min(a.clients, MAX_POOL)))
    try:
        if a.mode == "setup":
            await w.setup(a.players)
            return {"players": a.players}
        if a.mode == "throughput":
            return await postgres_throughput(w, a)
        return await postgres_latency(w, a)
    finally:
        await w.close()


def _sqlite_run(a: argparse.Namespace) -> dict[str, Any]:
    w = SqliteWallet(a.url)
    try:
        if a.mode == "setup":
            w.setup(a.players)
            return {"players": a.players}
        if a.mode == "throughput":
            return sqlite_throughput(w, a)
        return sqlite_latency(w, a)
    finally:
        w.close()


def main(argv: Sequence[str] | None = None) -> int:
    a = _parse(sys.argv[1:] if argv is None else argv)
    if a.store == "sqlite":
        out = _sqlite_run(a)
        out["driver"] = f"sqlite3 {sqlite3.sqlite_version}"
    else:
        import asyncpg

        try:
            import uvloop
        except ImportError:
            out = asyncio.run(_postgres(a))
        else:
            out = uvloop.run(_postgres(a))

        out["driver"] = f"asyncpg {asyncpg.__version__}"
        out["pool_size"] = max(1, min(a.clients, MAX_POOL))
    out["process_cpu_s"] = _cpu_s()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
