"""Endpoint stats through the REST API: who may read them, their shape when nothing was
sent, what deliveries to a receiver that fails some requests add up to, and how long the
counts are kept."""

from __future__ import annotations

from typing import Any

import httpx

from croupier.bootstrap import Container
from croupier.domain.clock import ManualClock
from croupier.store.stats import AttemptStat, record_attempt_stats
from tests.conftest import ADMIN_KEY
from tests.integration.conftest import (
    ReceiverFactory,
    TenantFactory,
    assert_error,
    create_endpoint,
    get_json,
    iso,
    opt_in,
    publish,
)
from tests.support.receiver import Reply

WINDOWS = ("5m", "1h", "24h")
EMPTY_WINDOW = {
    "attempts": 0,
    "succeeded": 0,
    "failed": 0,
    "success_rate": None,
    "latency_ms": {"p50": None, "p95": None, "p99": None},
    "last_error": None,
}


async def stats(client: httpx.AsyncClient, endpoint_id: str) -> dict[str, Any]:
    return await get_json(client, f"/v1/endpoints/{endpoint_id}/stats")


async def test_the_stats_of_an_unknown_endpoint_are_not_found(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/v1/endpoints/ep_01J000000000000000000000/stats")
    assert_error(r, 404, "NOT_FOUND")


async def test_the_stats_of_another_tenants_endpoint_are_not_found(
    client: httpx.AsyncClient, new_tenant: TenantFactory, start_receiver: ReceiverFactory
) -> None:
    receiver = await start_receiver(lambda _p, _n: Reply())
    other = await new_tenant("other")
    theirs = await create_endpoint(other.http, receiver.url())
    mine = await create_endpoint(client, receiver.url())
    assert_error(await client.get(f"/v1/endpoints/{theirs['id']}/stats"), 404, "NOT_FOUND")
    assert_error(await other.http.get(f"/v1/endpoints/{mine['id']}/stats"), 404, "NOT_FOUND")
    assert (await stats(other.http, theirs["id"]))["endpoint_id"] == theirs["id"]


async def test_the_stats_of_a_deleted_endpoint_are_not_found(
    client: httpx.AsyncClient, start_receiver: ReceiverFactory
) -> None:
    receiver = await start_receiver(lambda _p, _n: Reply())
    ep = await create_endpoint(client, receiver.url())
    assert (await client.delete(f"/v1/endpoints/{ep['id']}")).status_code == 204
    assert_error(await client.get(f"/v1/endpoints/{ep['id']}/stats"), 404, "NOT_FOUND")


async def test_the_stats_need_an_api_key(
    new_tenant: TenantFactory, client: httpx.AsyncClient, start_receiver: ReceiverFactory
) -> None:
    receiver = await start_receiver(lambda _p, _n: Reply())
    ep = await create_endpoint(client, receiver.url())
    r = await new_tenant.client(None).get(f"/v1/endpoints/{ep['id']}/stats")
    assert_error(r, 401, "UNAUTHORIZED")


async def test_an_endpoint_that_was_never_sent_to_has_empty_windows(
    client: httpx.AsyncClient, clock: ManualClock, start_receiver: ReceiverFactory
) -> None:
    receiver = await start_receiver(lambda _p, _n: Reply())
    ep = await create_endpoint(client, receiver.url())
    assert await stats(client, ep["id"]) == {
        "endpoint_id": ep["id"],
        "as_of": iso(clock),
        "breaker": ep["breaker"],
        "failing_since": None,
        "last_success_at": None,
        "disabled": False,
        "windows": {name: EMPTY_WINDOW for name in WINDOWS},
    }


async def test_deliveries_add_up_to_counts_a_success_rate_percentiles_and_the_last_error(
    client: httpx.AsyncClient,
    container: Container,
    clock: ManualClock,
    start_receiver: ReceiverFactory,
) -> None:
    # Of ten requests two fail and one is slow; ``n`` counts the requests before this one.
    def script(_path: str, n: int) -> Reply:
        if n in (2, 6):
            return Reply(500, "boom")
        return Reply(delay_s=0.25) if n == 4 else Reply()

    receiver = await start_receiver(script)
    ep = await create_endpoint(client, receiver.url(), retry_schedule=[0])
    failed_at = iso(clock)
    for n in range(10):
        await publish(client, data=opt_in(f"p{n}"))
    await container.dispatcher.run_until_idle()
    assert len(receiver.requests) == 10

    body = await stats(client, ep["id"])
    assert (body["endpoint_id"], body["as_of"]) == (ep["id"], iso(clock))
    for name in WINDOWS:
        window = body["windows"][name]
        assert (window["attempts"], window["succeeded"], window["failed"]) == (10, 8, 2)
        assert window["success_rate"] == 0.8
        latency = window["latency_ms"]
        # The slow one is the slowest tenth: p95 and p99 read its bucket, 200 ms and up.
        assert 0 < latency["p50"] < 200 <= latency["p95"] <= latency["p99"] <= 2_000
        error = window["last_error"]
        assert error is not None, name
        assert (error["status_code"], error["at"]) == (500, failed_at)
        assert isinstance(error["message"], str) and error["message"]

    # Ten minutes on, one success: the 5-minute window holds only that.
    clock.advance(600)
    await publish(client, data=opt_in("p10"))
    await container.dispatcher.run_until_idle()
    windows = (await stats(client, ep["id"]))["windows"]
    five = windows["5m"]
    assert (five["attempts"], five["succeeded"], five["failed"]) == (1, 1, 0)
    assert (five["success_rate"], five["last_error"]) == (1.0, None)
    assert five["latency_ms"]["p50"] is not None
    for name in ("1h", "24h"):
        assert (windows[name]["attempts"], windows[name]["failed"]) == (11, 2)
        assert windows[name]["last_error"]["at"] == failed_at


async def test_the_counts_are_kept_for_48_hours(
    client: httpx.AsyncClient,
    container: Container,
    clock: ManualClock,
    start_receiver: ReceiverFactory,
) -> None:
    receiver = await start_receiver(lambda _p, _n: Reply())
    ep = await create_endpoint(client, receiver.url())
    tenant_id = (await container.tenants.authenticate(ADMIN_KEY)).tenant_id
    attempt = AttemptStat(ep["id"], tenant_id, clock.now_ms(), 12.0, False, 502, "HTTP 502")
    await container.db.run(lambda conn: record_attempt_stats(conn, [attempt]))
    assert (await stats(client, ep["id"]))["windows"]["24h"]["attempts"] == 1

    clock.advance(47 * 3600)
    assert await container.endpoint_stats.purge() == 0
    clock.advance(3600)
    assert await container.endpoint_stats.purge() == 0, "the minute has not ended 48 h ago"
    clock.advance(60)
    assert await container.endpoint_stats.purge() == 1
    assert await container.endpoint_stats.purge() == 0
