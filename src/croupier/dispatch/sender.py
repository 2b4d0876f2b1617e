"""One HTTP POST of a webhook, with aiohttp over kept-alive connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import aiohttp

from croupier.domain.deliveries import RESPONSE_BODY_LIMIT, AttemptResult


class HttpSender:
    """Posts bodies and reports what came back; never raises for a network failure."""

    def __init__(self, *, max_connections: int) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[int, aiohttp.ClientTimeout] = {}

    async def open(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, ttl_dns_cache=60
            )
            # No cookie jar: one receiver's cookies must never reach the next request.
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding",),
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        timeout_ms: int,
        started_at_ms: int,
    ) -> AttemptResult:
        """POST once; redirects are not followed (a 3xx is a failed attempt)."""
        if self._session is None:
            raise RuntimeError("HttpSender.open() must be called first")
        t0 = time.perf_counter()
        timeout = self._timeouts.get(timeout_ms)
        if timeout is None:
            timeout = self._timeouts[timeout_ms] = aiohttp.ClientTimeout(total=timeout_ms / 1000)
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                raw = await resp.content.read(RESPONSE_BODY_LIMIT)
                return AttemptResult(
                    started_at_ms=started_at_ms,
                    duration_ms=_ms_since(t0),
                    status_code=resp.status,
                    response_headers=_flatten(resp.headers),
                    response_body=raw.decode("utf-8", errors="replace"),
                )
        except TimeoutError:
            error = f"timeout: no complete response within {timeout_ms} ms"
        except aiohttp.ClientConnectorError as exc:
            error = f"connection failed: {exc.os_error.strerror or exc.os_error}"
        except aiohttp.ServerDisconnectedError:
            error = "connection closed by the receiver before a response"
        except aiohttp.ClientPayloadError as exc:
            error = f"response body broken off: {exc}"
        except aiohttp.InvalidURL as exc:
            error = f"invalid url: {exc}"
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        return AttemptResult(started_at_ms=started_at_ms, duration_ms=_ms_since(t0), error=error)


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


def _flatten(headers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out
