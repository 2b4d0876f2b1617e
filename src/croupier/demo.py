"""``croupier demo``: croupier, a receiver and a simulated game server, all on this machine.

It starts ``croupier serve`` on a temporary SQLite file, the ``croupier listen`` receiver
(in this process, quiet) subscribed to the wallet's events, and a game server that
registers players and plays rounds (bets, wins, losses, cancels, prize payouts) over REST
and gRPC at once, showing a live summary. At the end it waits for the webhooks, compares
every player's balance with what the game server expects, and runs ``croupier wallet check``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from croupier.domain.signing import generate_secret
from croupier.listen import Listener, serve_listener

#: The wallet's event types the demo's receiver subscribes to.
WALLET_EVENTS = [
    "wallet.bet_placed",
    "wallet.win_credited",
    "bet.settled",
    "round.completed",
    "wallet.rollback",
    "wallet.credit.ok",
    "PRIZE_PAYOUT_CREATED",
    "PRIZE_PAYOUT_SUCCEEDED",
]
#: Events each kind of write publishes (a settle here always gives its round's details).
EVENTS_PER = {"authorize": 1, "settle": 3, "cancel": 1, "credit": 1, "prize": 3, "adjust": 0}
DEPOSIT = 100_00
_CLI = (sys.executable, "-m", "croupier.cli")


@dataclass
class Options:
    seconds: float = 20.0
    players: int = 20
    tables: int = 8
    keep: bool = False
    seed: int | None = None


@dataclass
class Stats:
    """What the game server saw, and what it expects every balance to be."""

    started: float = field(default_factory=time.monotonic)
    #: Seconds of play, once it is over (the rate is then over the play alone).
    played_s: float | None = None
    rounds: int = 0
    calls: dict[str, int] = field(default_factory=lambda: {"REST": 0, "gRPC": 0})
    latencies_ms: list[float] = field(default_factory=list)
    events: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)

    def timed(self, protocol: str, ms: float, kind: str) -> None:
        self.calls[protocol] += 1
        self.latencies_ms.append(ms)
        self.events += EVENTS_PER[kind]

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms[-20_000:])
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Refused(Exception):
    """The wallet said no (insufficient funds, a cancelled bet ...): part of the game."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class WalletClient(Protocol):
    protocol: str

    async def authorize(self, session_id: str, bet_id: str, round_id: str, minor: int) -> int: ...
    async def settle(self, bet_id: str, round_id: str, win: int) -> int: ...
    async def cancel(self, bet_id: str) -> int: ...
    async def credit(self, credit_id: str, player_id: str, minor: int, reason: str) -> int: ...


def run_demo(options: Options, console: Console) -> int:
    """Run the demo; the exit status (0 when every check passed)."""
    return asyncio.run(_demo(options, console))


async def _demo(options: Options, console: Console) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="croupier-demo-"))
    admin_key = "ck_demo_" + secrets.token_urlsafe(24)
    rest_port, grpc_port = _free_port(), _free_port()
    database_url = f"sqlite:///{workdir / 'demo.db'}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CROUPIER_")},
        "CROUPIER_DATABASE_URL": database_url,
        "CROUPIER_ADMIN_KEY": admin_key,
        "CROUPIER_GRPC_PORT": str(grpc_port),
        "CROUPIER_LOG_LEVEL": "warning",
    }
    secret = generate_secret("standard")
    listener = serve_listener(secret, port=0, console=Console(file=io.StringIO()))
    threading.Thread(target=listener.serve_forever, name="demo-listener", daemon=True).start()
    console.print(f"[bold]croupier demo[/]: files in {workdir}")
    log = (workdir / "serve.log").open("wb")
    serve = await asyncio.create_subprocess_exec(
        *_CLI,
        "serve",
        "--dev",
        "--host",
        "127.0.0.1",
        "--port",
        str(rest_port),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    status = 1
    try:
        base = f"http://127.0.0.1:{rest_port}"
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30
        ) as http:
            await _wait_ready(http, serve, workdir)
            console.print(f"croupier serve: REST {base}, gRPC 127.0.0.1:{grpc_port}")
            console.print(f"receiver (croupier listen): {listener.url}")
            await _checked(
                http.post(
                    "/v1/endpoints",
                    json={"url": listener.url, "event_types": WALLET_EVENTS, "secret": secret},
                )
            )
            rng = random.Random(options.seed)  # noqa: S311 - the game's dice, not a secret
            stats = Stats()
            sessions = await _players(http, options.players, stats)
            async with _grpc_client(grpc_port, admin_key) as grpc_wallet:
                clients: list[WalletClient] = [RestWallet(http), grpc_wallet]
                await _play(options, rng, stats, sessions, clients, http, listener, console)
            status = await _finish(stats, http, listener, env, console)
    finally:
        if serve.returncode is None:
            serve.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(serve.wait(), 30)
            except TimeoutError:
                serve.kill()
                await serve.wait()
        log.close()
        listener.shutdown()
        listener.server_close()
        if options.keep:
            console.print(f"kept {workdir} (demo.db, serve.log)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


async def _players(http: httpx.AsyncClient, count: int, stats: Stats) -> dict[str, str]:
    sessions: dict[str, str] = {}
    for n in range(count):
        player = f"player-{n + 1:02d}"
        await _write(http, "/v1/players", {"player_id": player, "currency": "EUR"})
        await _deposit(http, player, DEPOSIT)
        stats.expected[player] = DEPOSIT
        session = await _write(http, "/v1/sessions", {"player_id": player, "ttl_seconds": 3600})
        sessions[player] = session["session_id"]
    return sessions


async def _play(
    options: Options,
    rng: random.Random,
    stats: Stats,
    sessions: dict[str, str],
    clients: list[WalletClient],
    http: httpx.AsyncClient,
    listener: Listener,
    console: Console,
) -> None:
    players = list(sessions)
    deadline = time.monotonic() + options.seconds
    numbers = iter(range(10**9))

    async def table(client: WalletClient) -> None:
        for n in numbers:
            if time.monotonic() >= deadline:
                return
            player = rng.choice(players)
            try:
                await _round(rng, stats, client, http, player, sessions[player], n)
            except Refused as refusal:
                stats.refused[refusal.code] = stats.refused.get(refusal.code, 0) + 1
            stats.rounds += 1

    with Live(_summary(stats, listener), console=console, refresh_per_second=4) as live:
        tables = [
            asyncio.create_task(table(clients[t % len(clients)])) for t in range(options.tables)
        ]
        while not all(t.done() for t in tables):
            await asyncio.sleep(0.25)
            live.update(_summary(stats, listener))
        await asyncio.gather(*tables)
        stats.played_s = time.monotonic() - stats.started
        live.update(_summary(stats, listener))
    console.print()


async def _round(
    rng: random.Random,
    stats: Stats,
    client: WalletClient,
    http: httpx.AsyncClient,
    player: str,
    session_id: str,
    n: int,
) -> None:
    bet_id, round_id = f"bet-{n}", f"round-{n}"
    stake = rng.choice([10, 20, 50, 100, 200, 500])
    try:
        await _timed(
            stats, client, "authorize", client.authorize(session_id, bet_id, round_id, stake)
        )
    except Refused as refusal:
        if refusal.code == "INSUFFICIENT_FUNDS":
            # The player tops up, as a real one would, and plays on.
            await _deposit(http, player, DEPOSIT)
            stats.expected[player] += DEPOSIT
        raise
    stats.expected[player] -= stake
    roll = rng.random()
    if roll < 0.1:
        await _timed(stats, client, "cancel", client.cancel(bet_id))
        stats.expected[player] += stake
    else:
        win = 0 if roll < 0.55 else stake * rng.choice([1, 2, 2, 3, 5, 10])
        await _timed(stats, client, "settle", client.settle(bet_id, round_id, win))
        stats.expected[player] += win
    if rng.random() < 0.05:
        prize = rng.choice([100, 500, 1000])
        await _timed(
            stats, client, "prize", client.credit(f"prize-{n}", player, prize, "prize_payout")
        )
        stats.expected[player] += prize


async def _timed(stats: Stats, client: WalletClient, kind: str, call: Any) -> None:
    started = time.perf_counter()
    await call
    stats.timed(client.protocol, (time.perf_counter() - started) * 1000, kind)


async def _finish(
    stats: Stats,
    http: httpx.AsyncClient,
    listener: Listener,
    env: dict[str, str],
    console: Console,
) -> int:
    console.print("waiting for the last webhooks ...")
    for _ in range(150):  # 30 s at most
        if _delivered(listener) >= stats.events:
            break
        await asyncio.sleep(0.2)
    delivered = _delivered(listener)
    wrong = []
    for player, expected in stats.expected.items():
        got = (await http.get(f"/v1/players/{player}/balance")).json()["available"]["minor_units"]
        if got != expected:
            wrong.append(f"{player}: croupier {got}, game server {expected}")
    check = await asyncio.create_subprocess_exec(
        *_CLI,
        "wallet",
        "check",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(check.communicate(), 120)
    console.print(_summary(stats, listener))
    console.print("[bold]croupier wallet check[/]")
    console.print(out.decode(errors="replace").rstrip(), highlight=False, markup=False)
    ok = True
    if delivered < stats.events:
        console.print(f"[red]only {delivered} of {stats.events} events delivered in time[/]")
        ok = False
    else:
        console.print(f"[green]all {stats.events:,} events delivered and verified[/]")
    if wrong:
        console.print("[red]balances that differ from the game server's:[/]")
        for line in wrong:
            console.print(f"  {line}")
        ok = False
    else:
        console.print(
            f"[green]every balance ({len(stats.expected)}) is what the game server expects[/]"
        )
    if check.returncode != 0:
        ok = False
    return 0 if ok else 1


def _summary(stats: Stats, listener: Listener) -> Table:
    elapsed = stats.played_s or max(time.monotonic() - stats.started, 1e-9)
    table = Table(title="croupier demo", show_header=False, min_width=56)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("rounds played", f"{stats.rounds:,}")
    table.add_row("rounds/s", f"{stats.rounds / elapsed:,.1f}")
    table.add_row(
        "wallet calls (REST / gRPC)", f"{stats.calls['REST']:,} / {stats.calls['gRPC']:,}"
    )
    table.add_row(
        "wallet latency p50 / p99",
        f"{stats.percentile(0.5):.1f} / {stats.percentile(0.99):.1f} ms",
    )
    refused = ", ".join(f"{k} {v}" for k, v in sorted(stats.refused.items())) or "none"
    table.add_row("refused (part of the game)", refused)
    table.add_row("events published / delivered", f"{stats.events:,} / {_delivered(listener):,}")
    duplicates = sum(r.duplicate for r in list(listener.received))
    unverified = sum(not r.verified for r in list(listener.received))
    table.add_row("duplicates / failed signatures", f"{duplicates} / {unverified}")
    return table


def _delivered(listener: Listener) -> int:
    return sum(r.verified and not r.duplicate for r in list(listener.received))


# -- the two clients ----------------------------------------------------------------------


class RestWallet:
    protocol = "REST"

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def authorize(self, session_id: str, bet_id: str, round_id: str, minor: int) -> int:
        body = {
            "session_id": session_id,
            "bet_id": bet_id,
            "round_id": round_id,
            "amount": {"minor_units": minor, "currency": "EUR"},
        }
        return _available(await _write(self.http, "/v1/bets/authorize", body))

    async def settle(self, bet_id: str, round_id: str, win: int) -> int:
        body = {
            "bet_id": bet_id,
            "round_id": round_id,
            "win": {"minor_units": win, "currency": "EUR"},
            **_round_details(round_id),
        }
        return _available(await _write(self.http, "/v1/bets/settle", body))

    async def cancel(self, bet_id: str) -> int:
        body = {"bet_id": bet_id, "reason": "round_voided"}
        return _available(await _write(self.http, "/v1/bets/cancel", body))

    async def credit(self, credit_id: str, player_id: str, minor: int, reason: str) -> int:
        body = {
            "credit_id": credit_id,
            "player_id": player_id,
            "amount": {"minor_units": minor, "currency": "EUR"},
            "reason": reason,
            "campaign_id": "demo-campaign",
        }
        return _available(await _write(self.http, "/v1/credits", body))


class GrpcWallet:
    protocol = "gRPC"

    def __init__(self, channel: Any, admin_key: str) -> None:
        from croupier.api.grpc._gen import wallet_pb2 as pb

        self.pb = pb
        self.metadata = (("authorization", f"Bearer {admin_key}"),)
        self._calls: dict[str, Callable[..., Any]] = {}
        for name, request, response in (
            ("AuthorizeBet", pb.AuthorizeBetReq, pb.AuthorizeBetRes),
            ("SettleBet", pb.SettleReq, pb.SettleRes),
            ("CancelBet", pb.CancelBetReq, pb.CancelBetRes),
            ("Credit", pb.CreditReq, pb.CreditRes),
        ):
            self._calls[name] = channel.unary_unary(
                f"/wallet.v1.Wallet/{name}",
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            )

    async def _call(self, name: str, request: Any) -> int:
        import grpc

        try:
            answer = await self._calls[name](request, metadata=self.metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            raise Refused(_grpc_reason(exc)) from None
        return int(answer.balance.minor_units)

    async def authorize(self, session_id: str, bet_id: str, round_id: str, minor: int) -> int:
        pb = self.pb
        return await self._call(
            "AuthorizeBet",
            pb.AuthorizeBetReq(
                session_id=session_id,
                bet_id=bet_id,
                round_id=round_id,
                amount=pb.Money(minor_units=minor, currency="EUR"),
                idempotency_key=_key(),
            ),
        )

    async def settle(self, bet_id: str, round_id: str, win: int) -> int:
        pb = self.pb
        details = _round_details(round_id)
        fair = details["provably_fair"]
        return await self._call(
            "SettleBet",
            pb.SettleReq(
                bet_id=bet_id,
                round_id=round_id,
                win=pb.Money(minor_units=win, currency="EUR"),
                idempotency_key=_key(),
                game_id=details["game_id"],
                provably_fair=pb.ProvablyFair(
                    server_seed_hash=fair["server_seed_hash"],
                    client_seed=fair["client_seed"],
                    nonce=fair["nonce"],
                ),
            ),
        )

    async def cancel(self, bet_id: str) -> int:
        return await self._call(
            "CancelBet",
            self.pb.CancelBetReq(bet_id=bet_id, reason="round_voided", idempotency_key=_key()),
        )

    async def credit(self, credit_id: str, player_id: str, minor: int, reason: str) -> int:
        pb = self.pb
        return await self._call(
            "Credit",
            pb.CreditReq(
                credit_id=credit_id,
                player_id=player_id,
                amount=pb.Money(minor_units=minor, currency="EUR"),
                reason=reason,
                campaign_id="demo-campaign",
                idempotency_key=_key(),
            ),
        )


@contextlib.asynccontextmanager
async def _grpc_client(port: int, admin_key: str) -> AsyncIterator[GrpcWallet]:
    import grpc

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        await asyncio.wait_for(channel.channel_ready(), 30)
        yield GrpcWallet(channel, admin_key)
    finally:
        await channel.close()


def _grpc_reason(exc: Any) -> str:
    """The stable croupier code from a gRPC error's details (google.rpc.ErrorInfo)."""
    from grpc_status import rpc_status

    status = rpc_status.from_call(exc)
    if status is not None:
        from google.rpc import error_details_pb2

        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return str(info.reason)
    return str(exc.code().name)


# -- helpers ------------------------------------------------------------------------------


def _round_details(round_id: str) -> dict[str, Any]:
    return {
        "game_id": "demo-dice",
        "provably_fair": {
            "server_seed_hash": secrets.token_hex(32),
            "client_seed": round_id,
            "nonce": 1,
        },
    }


def _key() -> str:
    return "demo-" + secrets.token_hex(12)


def _available(answer: dict[str, Any]) -> int:
    return int(answer["balance"]["minor_units"])


async def _deposit(http: httpx.AsyncClient, player: str, minor: int) -> None:
    body = {"amount": {"minor_units": minor, "currency": "EUR"}, "reason": "deposit"}
    await _write(http, f"/v1/players/{player}/adjustments", body)


async def _write(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await http.post(path, json=body, headers={"X-Idempotency-Key": _key()})
    if r.status_code in (200, 201):
        answer: dict[str, Any] = r.json()
        return answer
    if r.status_code in (401, 404, 409, 422):
        raise Refused(str(r.json().get("code")))
    raise RuntimeError(f"POST {path}: {r.status_code} {r.text[:300]}")


async def _checked(request: Any) -> dict[str, Any]:
    r = await request
    if r.status_code >= 300:
        raise RuntimeError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}")
    answer: dict[str, Any] = r.json()
    return answer


async def _wait_ready(
    http: httpx.AsyncClient, serve: asyncio.subprocess.Process, workdir: Path
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if serve.returncode is not None:
            log = (workdir / "serve.log").read_text(errors="replace")
            raise RuntimeError(f"croupier serve exited with {serve.returncode}:\n{log}")
        with contextlib.suppress(httpx.TransportError):
            if (await http.get("/health")).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError("croupier serve did not start within 60 s")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
