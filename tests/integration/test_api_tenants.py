"""Tenants, API keys and authentication through the REST API, and tenant isolation: one
tenant can never read, change or even detect another tenant's data."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from croupier.bootstrap import Container
from tests.conftest import ADMIN_KEY
from tests.integration.conftest import (
    OPT_IN,
    TenantClient,
    TenantFactory,
    assert_error,
    closed_port_url,
    create_endpoint,
    get_json,
    list_all,
    opt_in,
    publish,
)
from tests.support.receiver import Receiver

CUSTOM_SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "integer"}},
    "required": ["score"],
}


# -- tenants and keys ---------------------------------------------------------------------


async def test_the_admin_creates_a_tenant_and_a_key_that_acts_for_it(
    client: httpx.AsyncClient, new_tenant: TenantFactory
) -> None:
    r = await client.post("/v1/tenants", json={"name": "brand-7"})
    assert r.status_code == 201, r.text
    tenant = r.json()
    assert tenant["name"] == "brand-7"
    assert tenant["id"] and tenant["id"] != "default"
    assert tenant["created_at"]

    r = await client.post(f"/v1/tenants/{tenant['id']}/keys", json={"name": "ci"})
    assert r.status_code == 201, r.text
    issued = r.json()
    assert issued["tenant_id"] == tenant["id"]
    assert issued["name"] == "ci"
    assert issued["admin"] is False
    assert issued["key"].startswith(issued["prefix"])
    assert len(issued["key"]) > len(issued["prefix"]) + 20

    brand = new_tenant.client(issued["key"])
    ep = await create_endpoint(brand, "https://brand7.example.com/hook")
    assert [e["id"] for e in await list_all(brand, "/v1/endpoints")] == [ep["id"]]
    assert await list_all(client, "/v1/endpoints") == []


async def test_a_key_can_be_issued_by_tenant_name(
    client: httpx.AsyncClient, new_tenant: TenantFactory
) -> None:
    made = (await client.post("/v1/tenants", json={"name": "by-name"})).json()
    r = await client.post("/v1/tenants/by-name/keys")
    assert r.status_code == 201, r.text
    assert r.json()["tenant_id"] == made["id"]
    assert (await new_tenant.client(r.json()["key"]).get("/v1/endpoints")).status_code == 200


async def test_each_key_is_new_and_shown_only_in_its_creation_answer(
    client: httpx.AsyncClient,
) -> None:
    tenant = (await client.post("/v1/tenants", json={"name": "keys"})).json()
    first = (await client.post(f"/v1/tenants/{tenant['id']}/keys")).json()
    second = (await client.post(f"/v1/tenants/{tenant['id']}/keys")).json()
    assert first["key"] != second["key"]
    assert first["id"] != second["id"]
    listed = await list_all(client, "/v1/tenants")
    assert first["key"] not in str(listed)


async def test_the_admin_lists_tenants_including_the_default_one(
    client: httpx.AsyncClient,
) -> None:
    for name in ("alpha", "beta", "gamma"):
        await client.post("/v1/tenants", json={"name": name})
    names = {t["name"] for t in await list_all(client, "/v1/tenants", limit="2")}
    assert names == {"default", "alpha", "beta", "gamma"}


async def test_a_tenant_name_is_unique(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/tenants", json={"name": "twice"})).status_code == 201
    r = await client.post("/v1/tenants", json={"name": "twice"})
    assert_error(r, 409, "CONFLICT")
    assert [t["name"] for t in await list_all(client, "/v1/tenants")].count("twice") == 1


async def test_concurrent_creations_of_one_tenant_name_make_exactly_one(
    client: httpx.AsyncClient,
) -> None:
    answers = await asyncio.gather(
        *(client.post("/v1/tenants", json={"name": "racy"}) for _ in range(6))
    )
    assert sorted(r.status_code for r in answers) == [201] + [409] * 5, [r.text for r in answers]
    assert [t["name"] for t in await list_all(client, "/v1/tenants")].count("racy") == 1


@pytest.mark.parametrize("name", ["", "Upper", "has space", "-dash-first", "x" * 64, "a/b"])
async def test_a_tenant_name_must_be_a_short_lowercase_slug(
    client: httpx.AsyncClient, name: str
) -> None:
    r = await client.post("/v1/tenants", json={"name": name})
    assert_error(r, 422, "VALIDATION_FAILED", "name")


async def test_a_tenant_needs_a_name(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/v1/tenants", json={}), 422, "VALIDATION_FAILED", "name")


async def test_a_key_for_a_tenant_that_does_not_exist_is_404(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/tenants/ten_missing/keys")
    assert_error(r, 404, "NOT_FOUND")


async def test_a_tenant_key_may_not_administer(
    client: httpx.AsyncClient, new_tenant: TenantFactory
) -> None:
    a = await new_tenant("tenant-a")
    assert_error(await a.http.post("/v1/tenants", json={"name": "sneaky"}), 403, "FORBIDDEN")
    assert_error(await a.http.post(f"/v1/tenants/{a.id}/keys"), 403, "FORBIDDEN")
    assert_error(await a.http.post("/v1/tenants/default/keys"), 403, "FORBIDDEN")
    assert_error(await a.http.get("/v1/tenants"), 403, "FORBIDDEN")
    names = {t["name"] for t in await list_all(client, "/v1/tenants")}
    assert names == {"default", "tenant-a"}


async def test_an_admin_key_can_only_be_issued_for_the_default_tenant(
    client: httpx.AsyncClient, new_tenant: TenantFactory
) -> None:
    a = await new_tenant("tenant-a")
    r = await client.post(f"/v1/tenants/{a.id}/keys", json={"admin": True})
    assert_error(r, 422, "VALIDATION_FAILED", "admin")

    r = await client.post("/v1/tenants/default/keys", json={"name": "ops", "admin": True})
    assert r.status_code == 201, r.text
    assert r.json()["admin"] is True
    second_admin = new_tenant.client(r.json()["key"])
    made = await second_admin.post("/v1/tenants", json={"name": "made-by-ops"})
    assert made.status_code == 201, made.text


# -- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer ck_wrong_key_0123456789abcdefghijklmnop",
        f"Basic {ADMIN_KEY}",
        ADMIN_KEY,
        f"Bearer {ADMIN_KEY}x",
        f"Bearer {ADMIN_KEY[:-1]}",
    ],
)
async def test_a_missing_or_wrong_key_is_401_with_a_bearer_challenge(
    new_tenant: TenantFactory, authorization: str | None
) -> None:
    anonymous = new_tenant.client(None)
    headers = {"Authorization": authorization} if authorization is not None else {}
    r = await anonymous.get("/v1/endpoints", headers=headers)
    assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_the_bearer_scheme_is_case_insensitive(new_tenant: TenantFactory) -> None:
    r = await new_tenant.client(None).get(
        "/v1/endpoints", headers={"Authorization": f"bearer {ADMIN_KEY}"}
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/endpoints"),
        ("POST", "/v1/endpoints"),
        ("GET", "/v1/endpoints/ep_x"),
        ("PATCH", "/v1/endpoints/ep_x"),
        ("DELETE", "/v1/endpoints/ep_x"),
        ("POST", "/v1/endpoints/ep_x/replay"),
        ("GET", "/v1/events"),
        ("POST", "/v1/events"),
        ("GET", "/v1/events/evt_x"),
        ("GET", "/v1/deliveries"),
        ("GET", "/v1/deliveries/dlv_x"),
        ("POST", "/v1/deliveries/dlv_x/retry"),
        ("GET", "/v1/event-types"),
        ("GET", "/v1/event-types/round.completed"),
        ("PUT", "/v1/event-types/my.type"),
        ("GET", "/v1/tenants"),
        ("POST", "/v1/tenants"),
        ("POST", "/v1/tenants/default/keys"),
    ],
)
async def test_every_v1_route_needs_a_key(
    new_tenant: TenantFactory, container: Container, method: str, path: str
) -> None:
    anonymous = new_tenant.client(None)
    r = await anonymous.request(method, path, json={"name": "x", "url": "http://x.test/"})
    assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert await container.dispatcher.run_until_idle() == 0


async def test_an_unauthenticated_publish_writes_nothing(
    client: httpx.AsyncClient, new_tenant: TenantFactory
) -> None:
    await create_endpoint(client, "https://hooks.example.com/a")
    r = await new_tenant.client("ck_nope_000000000000000000000000").post(
        "/v1/events", json={"type": OPT_IN, "data": opt_in()}
    )
    assert_error(r, 401, "UNAUTHORIZED")
    assert await list_all(client, "/v1/events") == []


async def test_health_needs_no_key(new_tenant: TenantFactory) -> None:
    r = await new_tenant.client(None).get("/health")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ok"


# -- isolation ----------------------------------------------------------------------------


async def two_tenants(new_tenant: TenantFactory) -> tuple[TenantClient, TenantClient]:
    return await new_tenant("tenant-a"), await new_tenant("tenant-b")


async def test_a_tenant_cannot_see_or_touch_another_tenants_endpoints(
    new_tenant: TenantFactory,
) -> None:
    a, b = await two_tenants(new_tenant)
    ep = await create_endpoint(a.http, "https://a.example.com/hook")
    own = await create_endpoint(b.http, "https://b.example.com/hook")
    path = f"/v1/endpoints/{ep['id']}"

    assert [e["id"] for e in await list_all(b.http, "/v1/endpoints")] == [own["id"]]
    assert_error(await b.http.get(path), 404, "NOT_FOUND")
    assert_error(await b.http.patch(path, json={"url": "https://evil.example/"}), 404, "NOT_FOUND")
    assert_error(await b.http.patch(path, json={"disabled": True}), 404, "NOT_FOUND")
    assert_error(await b.http.post(f"{path}/replay", json={"status": "all"}), 404, "NOT_FOUND")
    assert_error(await b.http.delete(path), 404, "NOT_FOUND")

    after = await get_json(a.http, path)
    assert after["url"] == "https://a.example.com/hook"
    assert after["disabled"] is False
    assert [e["id"] for e in await list_all(a.http, "/v1/endpoints")] == [ep["id"]]


async def test_a_tenant_cannot_see_another_tenants_events(new_tenant: TenantFactory) -> None:
    a, b = await two_tenants(new_tenant)
    event = await publish(a.http, id="evt-a-only")
    assert await list_all(b.http, "/v1/events") == []
    assert await list_all(b.http, "/v1/events", type=OPT_IN) == []
    assert_error(await b.http.get(f"/v1/events/{event['id']}"), 404, "NOT_FOUND")
    a_page = await get_json(a.http, "/v1/events")
    # even A's own cursor shows B nothing of A's
    assert (await get_json(b.http, "/v1/events", cursor=a_page["resume_cursor"]))["data"] == []
    assert [e["id"] for e in await list_all(a.http, "/v1/events")] == ["evt-a-only"]


async def test_a_tenant_cannot_see_retry_or_replay_another_tenants_deliveries(
    new_tenant: TenantFactory, container: Container
) -> None:
    a, b = await two_tenants(new_tenant)
    ep = await create_endpoint(a.http, closed_port_url(), retry_schedule=[0])
    event = await publish(a.http)
    await container.dispatcher.run_until_idle()
    [delivery] = await list_all(a.http, "/v1/deliveries")
    assert delivery["status"] == "dead"

    assert await list_all(b.http, "/v1/deliveries") == []
    assert await list_all(b.http, "/v1/deliveries", endpoint_id=ep["id"]) == []
    assert await list_all(b.http, "/v1/deliveries", status="dead") == []
    assert_error(await b.http.get(f"/v1/deliveries/{delivery['id']}"), 404, "NOT_FOUND")
    assert_error(await b.http.post(f"/v1/deliveries/{delivery['id']}/retry"), 404, "NOT_FOUND")
    assert_error(
        await b.http.post(f"/v1/endpoints/{ep['id']}/replay", json={"status": "dead"}),
        404,
        "NOT_FOUND",
    )

    assert await container.dispatcher.run_until_idle() == 0
    [still] = await list_all(a.http, "/v1/deliveries")
    assert (still["status"], still["attempts"]) == ("dead", 1)
    assert still["event_id"] == event["id"]


async def test_the_admin_key_acts_only_for_the_default_tenant(
    client: httpx.AsyncClient, new_tenant: TenantFactory
) -> None:
    a = await new_tenant("tenant-a")
    ep = await create_endpoint(a.http, "https://a.example.com/hook")
    event = await publish(a.http)
    assert await list_all(client, "/v1/endpoints") == []
    assert await list_all(client, "/v1/events") == []
    assert await list_all(client, "/v1/deliveries") == []
    assert_error(await client.get(f"/v1/endpoints/{ep['id']}"), 404, "NOT_FOUND")
    assert_error(await client.get(f"/v1/events/{event['id']}"), 404, "NOT_FOUND")


async def test_the_same_event_id_in_two_tenants_is_two_independent_events(
    new_tenant: TenantFactory,
) -> None:
    a, b = await two_tenants(new_tenant)
    await create_endpoint(a.http, "https://a.example.com/hook")
    ra = await a.http.post(
        "/v1/events", json={"id": "order-1", "type": OPT_IN, "data": opt_in("from-a")}
    )
    rb = await b.http.post(
        "/v1/events", json={"id": "order-1", "type": OPT_IN, "data": opt_in("from-b")}
    )
    assert ra.status_code == rb.status_code == 202, rb.text
    assert ra.json() == {"id": "order-1", "type": OPT_IN, "deliveries": 1}
    assert rb.json() == {"id": "order-1", "type": OPT_IN, "deliveries": 0}
    assert (await get_json(a.http, "/v1/events/order-1"))["data"] == opt_in("from-a")
    assert (await get_json(b.http, "/v1/events/order-1"))["data"] == opt_in("from-b")
    assert len(await list_all(a.http, "/v1/deliveries")) == 1
    assert await list_all(b.http, "/v1/deliveries") == []


async def test_the_same_idempotency_key_in_two_tenants_is_independent(
    new_tenant: TenantFactory,
) -> None:
    a, b = await two_tenants(new_tenant)
    headers = {"Idempotency-Key": "shared-key"}
    ra = await a.http.post(
        "/v1/events", json={"type": OPT_IN, "data": opt_in("a")}, headers=headers
    )
    rb = await b.http.post(
        "/v1/events", json={"type": OPT_IN, "data": opt_in("b")}, headers=headers
    )
    assert ra.status_code == rb.status_code == 202, rb.text
    assert ra.json()["id"] != rb.json()["id"]
    assert (await get_json(b.http, f"/v1/events/{rb.json()['id']}"))["data"] == opt_in("b")


async def test_a_publish_never_reaches_another_tenants_endpoints(
    new_tenant: TenantFactory, container: Container, receiver: Receiver
) -> None:
    a, b = await two_tenants(new_tenant)
    await create_endpoint(a.http, receiver.url("/a"))
    answer = await publish(b.http)
    assert answer["deliveries"] == 0
    await container.dispatcher.run_until_idle()
    assert receiver.requests == []


async def test_event_types_of_one_tenant_are_invisible_to_another(
    new_tenant: TenantFactory,
) -> None:
    a, b = await two_tenants(new_tenant)
    r = await a.http.put("/v1/event-types/loyalty.scored", json={"schema": CUSTOM_SCHEMA})
    assert r.status_code == 200, r.text

    names_b = {t["name"] for t in (await get_json(b.http, "/v1/event-types"))["data"]}
    assert "loyalty.scored" not in names_b
    assert len(names_b) == 25
    assert_error(await b.http.get("/v1/event-types/loyalty.scored"), 404, "NOT_FOUND")
    r = await b.http.post("/v1/events", json={"type": "loyalty.scored", "data": {"score": 1}})
    assert_error(r, 422, "UNKNOWN_EVENT_TYPE", "type")
    r = await b.http.post(
        "/v1/endpoints", json={"url": "https://b.example.com/", "event_types": ["loyalty.scored"]}
    )
    assert_error(r, 422, "VALIDATION_FAILED", "event_types.0")


async def test_two_tenants_may_define_the_same_type_name_differently(
    new_tenant: TenantFactory,
) -> None:
    a, b = await two_tenants(new_tenant)
    await a.http.put("/v1/event-types/loyalty.scored", json={"schema": CUSTOM_SCHEMA})
    await b.http.put(
        "/v1/event-types/loyalty.scored",
        json={
            "schema": {"type": "object", "required": ["label"]},
            "schema_version": "2.0.0",
        },
    )
    assert (await get_json(a.http, "/v1/event-types/loyalty.scored"))["schema"] == CUSTOM_SCHEMA
    r = await a.http.post("/v1/events", json={"type": "loyalty.scored", "data": {"label": "x"}})
    assert_error(r, 422, "SCHEMA_VIOLATION", "data.score")
    r = await b.http.post("/v1/events", json={"type": "loyalty.scored", "data": {"label": "x"}})
    assert r.status_code == 202, r.text
    assert (await get_json(b.http, "/v1/events/" + r.json()["id"]))["schema_version"] == "2.0.0"
