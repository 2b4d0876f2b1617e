"""What the HTTP client costs a sender: croupier's ``HttpSender`` against aiohttp's client
doing the same work (the sender croupier used until the fifth session) and against a
minimal kept-alive HTTP/1.1 client on an asyncio protocol with httptools' response parser.

A measurement for a design decision, not part of ``make bench``: run it alone on a quiet
machine with ``.venv/bin/python bench/http_client.py``. It starts the delivery bench's
receiver, then alternates the three clients (same nine headers, same ~1 KiB body, the same
64 requests in flight, a 10 s timeout each) for a fixed number of rounds, and prints each
client's CPU per POST (this process only) and rate. The minimal client is only a probe of
the floor: it handles neither TLS, redirects, ``Connection: close`` nor errors.
"""

from __future__ import annotations

import asyncio
import base64
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import cast

import aiohttp
import httptools
import orjson
import uvloop

from croupier.dispatch.sender import HttpSender
from croupier.domain.deliveries import RESPONSE_BODY_LIMIT

HERE = Path(__file__).resolve().parent
BODY = orjson.dumps({"id": "probe", "type": "bench.probe", "data": {"pad": "x" * 900}})
HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": "Croupier-Webhooks/0.1.0",
    "X-Trace-Id": "evt_01JD5K8ZQ3W4X5Y6Z7A8B9C0D1",
    "traceparent": "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01",
    "webhook-id": "evt_01JD5K8ZQ3W4X5Y6Z7A8B9C0D1",
    "webhook-timestamp": "1763750000",
    "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode(),
}
CONCURRENCY = 64
POSTS = 15_000
ROUNDS = 5
DEADLINE_S = 240.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Probe(asyncio.Protocol):
    """One kept-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[int] | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self._parser.get_status_code())

    async def post(self, head: bytes, body: bytes) -> int:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.writelines([head, body])
        return await asyncio.wait_for(self._waiter, 10.0)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _request_head(port: int, path: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(BODY)}"]
    lines += [f"{name}: {value}" for name, value in HEADERS.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Aiohttp:
    """aiohttp's client doing what a sender does: a POST, a status, headers, 4 KiB of body."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=10)

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=CONCURRENCY, limit_per_host=0, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),
        )

    async def post(self, url: str) -> int:
        assert self._session is not None
        async with self._session.post(
            url, data=BODY, headers=HEADERS, timeout=self._timeout, allow_redirects=False
        ) as resp:
            await resp.content.read(RESPONSE_BODY_LIMIT)
            {name.lower(): value for name, value in resp.headers.items()}
            return resp.status

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _trial(kind: str, port: int) -> tuple[float, float]:
    """CPU seconds per POST and POSTs/s for one client, after a warm-up."""
    url = f"http://127.0.0.1:{port}/probe"
    sender = HttpSender(max_connections=CONCURRENCY)
    plain = _Aiohttp()
    probes: list[_Probe] = []
    if kind == "croupier":
        await sender.open()
    elif kind == "aiohttp":
        await plain.open()
    else:
        loop = asyncio.get_running_loop()
        for _ in range(CONCURRENCY):
            _, probe = await loop.create_connection(_Probe, "127.0.0.1", port)
            probes.append(probe)
    head = _request_head(port, "/probe")
    issued = 0

    async def worker(slot: int, total: int) -> None:
        nonlocal issued
        while issued < total:
            issued += 1
            if kind == "croupier":
                await sender.post(url, BODY, HEADERS, timeout_ms=10_000, started_at_ms=0)
            elif kind == "aiohttp":
                await plain.post(url)
            else:
                await probes[slot].post(head, BODY)

    try:
        await asyncio.gather(*(worker(i, CONCURRENCY * 20) for i in range(CONCURRENCY)))
        issued = 0
        cpu0, t0 = _cpu(), time.perf_counter()
        await asyncio.gather(*(worker(i, POSTS) for i in range(CONCURRENCY)))
        seconds, cpu = time.perf_counter() - t0, _cpu() - cpu0
    finally:
        await sender.close()
        await plain.close()
        for probe in probes:
            probe.close()
    return cpu / POSTS, POSTS / seconds


async def main() -> int:
    receiver = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "delivery.py"),
        "receiver",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert receiver.stdout is not None
        line = await asyncio.wait_for(receiver.stdout.readline(), 30)
        port = int(line.split()[1])
        results: dict[str, list[tuple[float, float]]] = {
            "aiohttp": [],
            "croupier": [],
            "minimal": [],
        }
        end = time.monotonic() + DEADLINE_S
        for round_ in range(ROUNDS):
            for kind in results:
                if time.monotonic() > end:
                    break
                results[kind].append(await _trial(kind, port))
            print(f"round {round_ + 1}/{ROUNDS} done", flush=True)
        for kind, runs in results.items():
            cpus = [1e6 * cpu for cpu, _ in runs]
            rates = [rate for _, rate in runs]
            print(
                f"{kind:8s} CPU per POST, us: median {statistics.median(cpus):6.1f} "
                f"(min {min(cpus):.1f}, max {max(cpus):.1f}); "
                f"POSTs/s: median {statistics.median(rates):,.0f}"
            )
    finally:
        receiver.terminate()
        await receiver.wait()
    return 0


if __name__ == "__main__":
    sys.exit(uvloop.run(main()))
