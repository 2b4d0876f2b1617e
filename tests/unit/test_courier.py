"""The courier's limits and turn-taking, with a sender that only counts."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections import Counter
from collections.abc import Mapping

from croupier.dispatch.courier import (
    Courier,
    CourierConfig,
    EndpointSpec,
    Job,
    Report,
    build_headers,
    redact,
)
from croupier.dispatch.sender import HttpSender
from croupier.domain.clock import ManualClock
from croupier.domain.deliveries import AttemptResult
from croupier.domain.events import Event
from croupier.domain.signing import signer_for

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class CountingSender(HttpSender):
    """Answers 200 once released, and remembers how many requests ran at once."""

    def __init__(self) -> None:
        super().__init__(max_connections=1)
        self.running: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.peak_total = 0
        self.order: list[str] = []
        self.gate = asyncio.Event()

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        timeout_ms: int,
        started_at_ms: int,
    ) -> AttemptResult:
        self.running[url] += 1
        self.peak[url] = max(self.peak[url], self.running[url])
        self.peak_total = max(self.peak_total, sum(self.running.values()))
        self.order.append(url)
        await self.gate.wait()
        await asyncio.sleep(0)
        self.running[url] -= 1
        return AttemptResult(started_at_ms=started_at_ms, duration_ms=0.1, status_code=200)


def spec(name: str) -> EndpointSpec:
    return EndpointSpec(name, 1, name, {}, 1000, "standard", (SECRET,))


def job(seq: int, endpoint: str) -> Job:
    event = Event(
        id=f"evt_{seq}",
        tenant_id="t",
        type="x",
        schema_version="1.0.0",
        data_json=b"{}",
        occurred_at_ms=0,
        created_at_ms=0,
    )
    return Job(seq, f"dlv_{seq}", 1, endpoint, 1, event)


async def run(config: CourierConfig, jobs: list[Job]) -> tuple[CountingSender, list[Report]]:
    sender = CountingSender()
    reports: list[Report] = []
    done = asyncio.Event()

    def on_reports(batch: list[Report]) -> None:
        reports.extend(batch)
        if len(reports) >= len(jobs):
            done.set()

    courier = Courier(sender, clock=ManualClock(), config=config, on_reports=on_reports)
    courier.learn([spec("a"), spec("b"), spec("c")])
    courier.submit(jobs)
    for _ in range(10):
        await asyncio.sleep(0)
    sender.gate.set()
    async with asyncio.timeout(5):
        await done.wait()
    return sender, reports


async def test_every_job_is_reported_once_within_both_limits() -> None:
    jobs = [job(i, "abc"[i % 3]) for i in range(60)]
    sender, reports = await run(CourierConfig(max_in_flight=5, endpoint_max_in_flight=2), jobs)
    assert sorted(r.seq for r in reports) == list(range(60))
    assert all(r.result is not None and r.result.status_code == 200 for r in reports)
    assert max(sender.peak.values()) == 2
    assert sender.peak_total == 5


async def test_an_endpoint_with_a_backlog_takes_turns_with_one_that_waits_for_a_slot() -> None:
    jobs = [job(i, "a") for i in range(20)] + [job(100, "b")]
    sender, _ = await run(CourierConfig(max_in_flight=2, endpoint_max_in_flight=2), jobs)
    # b found both slots taken by a; it goes as soon as one of a's requests ends.
    assert sender.order.index("b") <= 3


async def test_a_job_for_an_endpoint_the_courier_does_not_know_is_reported_unsent() -> None:
    jobs = [job(1, "a"), Job(2, "dlv_2", 1, "zzz", 1, job(2, "a").event)]
    _, reports = await run(CourierConfig(), jobs)
    assert {r.seq: r.result is None for r in reports} == {1: False, 2: True}


async def test_finish_reports_queued_jobs_unsent_at_once_and_lets_running_ones_end() -> None:
    sender = CountingSender()
    reports: list[Report] = []
    all_in = asyncio.Event()

    def on_reports(batch: list[Report]) -> None:
        reports.extend(batch)
        if len(reports) >= 10:
            all_in.set()

    courier = Courier(
        sender,
        clock=ManualClock(),
        config=CourierConfig(max_in_flight=8, endpoint_max_in_flight=2),
        on_reports=on_reports,
    )
    courier.learn([spec("a")])
    courier.submit([job(i, "a") for i in range(10)])
    for _ in range(5):
        await asyncio.sleep(0)
    courier.finish()
    for _ in range(5):
        await asyncio.sleep(0)
    assert sorted(r.seq for r in reports) == list(range(2, 10))
    assert all(r.result is None for r in reports)
    sender.gate.set()
    async with asyncio.timeout(5):
        await all_in.wait()
    assert {r.seq for r in reports if r.result is not None} == {0, 1}
    assert sender.order == ["a", "a"], "nothing new started after finish()"


def test_headers_carry_a_w3c_traceparent_with_a_fresh_span_for_every_request() -> None:
    signer = signer_for("standard", (SECRET,))
    plain = job(1, "a").event
    traced = dataclasses.replace(plain, trace_id="0AF7651916CD43DD8448EB211C80319C")
    seen = set()
    for event in (plain, plain, traced):
        headers = build_headers(spec("a"), signer, event, b"{}", 1_700_000_000_000)
        version, trace, span, flags = headers["traceparent"].split("-")
        assert (version, flags, len(trace), len(span)) == ("00", "01", 32, 16)
        assert int(span, 16) != 0
        seen.add(span)
        if event is traced:
            assert trace == "0af7651916cd43dd8448eb211c80319c", "a W3C trace id is kept"
        else:
            assert trace == hashlib.sha256(b"evt_1").hexdigest()[:32], "others are digested"
    assert len(seen) == 3


def test_an_attempt_keeps_the_request_headers_with_the_endpoints_own_values_redacted() -> None:
    headers = {"X-Key": "secret", "webhook-id": "evt_1"}
    with_own = spec("a")._replace(headers={"X-Key": "secret"})
    assert redact(headers, with_own) == {"X-Key": "[redacted]", "webhook-id": "evt_1"}
    assert headers["X-Key"] == "secret", "the request itself is not changed"
    assert redact(headers, spec("a")) is headers, "nothing to hide: no copy"
