"""Errors in general: one schema for every error, clear 4xx for every bad request (never a
500), and the request's trace id on every answer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from croupier.bootstrap import Container
from croupier.domain.endpoints import Endpoint
from croupier.services.endpoints import EndpointService
from croupier.services.pagination import Page
from tests.conftest import ADMIN_KEY
from tests.integration.conftest import (
    OPT_IN,
    TenantFactory,
    assert_error,
    create_endpoint,
    cursor_for,
    get_json,
    list_all,
    opt_in,
)

HOOK = "https://hooks.example.com/in"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nothing-here"),
        ("GET", "/nothing-here"),
        ("GET", "/v2/endpoints"),
        ("POST", "/v1/events/evt_1/deliveries"),
        ("GET", "/v1/endpoints/ep_1/deliveries"),
    ],
)
async def test_an_unknown_route_is_404_in_the_error_schema(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    assert_error(await client.request(method, path), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/events", {"GET", "POST"}),
        ("PUT", "/v1/endpoints", {"GET", "POST"}),
        ("POST", "/v1/event-types", {"GET"}),
        ("GET", "/v1/deliveries/dlv_1/retry", {"POST"}),
        ("DELETE", "/v1/events/evt_1", {"GET"}),
        ("GET", "/v1/endpoints/ep_1/replay", {"POST"}),
    ],
)
async def test_a_wrong_method_is_405_in_the_error_schema_and_says_what_is_allowed(
    client: httpx.AsyncClient, method: str, path: str, allowed: set[str]
) -> None:
    r = await client.request(method, path)
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    # RFC 9110 section 15.5.6: a 405 response MUST carry an Allow header.
    assert "allow" in r.headers, dict(r.headers)
    assert {m.strip() for m in r.headers["allow"].split(",")} >= allowed


JSON_ROUTES: list[tuple[str, str]] = [
    ("POST", "/v1/endpoints"),
    ("PATCH", "/v1/endpoints/{ep}"),
    ("POST", "/v1/endpoints/{ep}/replay"),
    ("POST", "/v1/events"),
    ("PUT", "/v1/event-types/loyalty.scored"),
    ("POST", "/v1/tenants"),
    ("POST", "/v1/tenants/default/keys"),
]


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_a_body_that_is_not_sent_as_json_is_415(
    client: httpx.AsyncClient, method: str, path: str, content_type: str
) -> None:
    ep = await create_endpoint(client, HOOK)
    before = await get_json(client, f"/v1/endpoints/{ep['id']}")
    r = await client.request(
        method,
        path.format(ep=ep["id"]),
        content=b'{"name": "x", "url": "https://x.example.com/", "description": "y"}',
        headers={"Content-Type": content_type},
    )
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert await get_json(client, f"/v1/endpoints/{ep['id']}") == before
    assert len(await list_all(client, "/v1/endpoints")) == 1
    assert len(await list_all(client, "/v1/tenants")) == 1


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "application/merge-patch+json", "APPLICATION/JSON"],
)
async def test_json_media_types_with_parameters_or_suffixes_are_accepted(
    client: httpx.AsyncClient, content_type: str
) -> None:
    ep = await create_endpoint(client, HOOK)
    r = await client.patch(
        f"/v1/endpoints/{ep['id']}",
        content=b'{"description": "via json"}',
        headers={"Content-Type": content_type},
    )
    assert r.status_code == 200, r.text
    assert r.json()["description"] == "via json"


@pytest.mark.parametrize("path", ["/v1/endpoints", "/v1/events", "/v1/tenants"])
async def test_an_empty_body_is_a_clear_422(client: httpx.AsyncClient, path: str) -> None:
    r = await client.post(path, content=b"", headers={"Content-Type": "application/json"})
    body = assert_error(r, 422, "VALIDATION_FAILED")
    assert "None" not in body["message"], body["message"]


@pytest.mark.parametrize("content", [b"[]", b"null", b"42", b'"text"'])
async def test_a_body_that_is_not_a_json_object_is_422(
    client: httpx.AsyncClient, content: bytes
) -> None:
    r = await client.post(
        "/v1/endpoints", content=content, headers={"Content-Type": "application/json"}
    )
    body = assert_error(r, 422, "VALIDATION_FAILED")
    assert "None" not in body["message"], body["message"]
    assert await list_all(client, "/v1/endpoints") == []


@pytest.mark.parametrize("content", [b"{", b'{"url": }', b"{'url': 'x'}", b"\xff\xfe"])
async def test_malformed_json_is_400_on_every_json_route(
    client: httpx.AsyncClient, content: bytes
) -> None:
    for method, path in [("POST", "/v1/endpoints"), ("POST", "/v1/tenants")]:
        r = await client.request(
            method, path, content=content, headers={"Content-Type": "application/json"}
        )
        assert_error(r, 400, "MALFORMED_JSON")


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/endpoints/ep_missing", 404, "NOT_FOUND"),
        ("GET", "/v1/nothing", 404, "NOT_FOUND"),
        ("DELETE", "/v1/events", 405, "METHOD_NOT_ALLOWED"),
        ("POST", "/v1/events", 422, "VALIDATION_FAILED"),
        ("GET", "/v1/deliveries?status=lost", 422, "VALIDATION_FAILED"),
    ],
)
async def test_every_error_carries_the_trace_id_of_its_request(
    client: httpx.AsyncClient, method: str, path: str, status: int, code: str
) -> None:
    r = await client.request(
        method, path, headers={"X-Trace-Id": "req-1234"}, json={"type": OPT_IN}
    )
    body = assert_error(r, status, code)
    assert r.headers["x-trace-id"] == "req-1234"
    assert body["trace_id"] == "req-1234"


async def test_an_unauthorized_answer_carries_the_trace_id_too(
    new_tenant: TenantFactory,
) -> None:
    r = await new_tenant.client(None).get("/v1/events", headers={"X-Trace-Id": "anon-1"})
    body = assert_error(r, 401, "UNAUTHORIZED")
    assert body["trace_id"] == "anon-1"


class BrokenEndpoints(EndpointService):
    """An endpoint service whose store has gone wrong in an unexpected way."""

    async def list(self, tenant_id: str, *, limit: int, cursor: str | None) -> Page[Endpoint]:
        raise RuntimeError("the disk is on fire")


async def test_an_unexpected_failure_is_500_in_the_error_schema_with_the_trace_id(
    container: Container, new_tenant: TenantFactory
) -> None:
    container.endpoints = BrokenEndpoints(container.store, container.clock, container.event_types)
    lenient = new_tenant.client(ADMIN_KEY, raise_app_exceptions=False)
    r = await lenient.get("/v1/endpoints", headers={"X-Trace-Id": "boom-1"})
    assert r.status_code == 500, r.text
    body: dict[str, Any] = r.json()
    assert body["code"] == "INTERNAL"
    assert body["retryable"] is False
    assert "disk" not in body["message"], "internal details must not leak to the caller"
    assert body["trace_id"] == "boom-1"
    assert r.headers.get("x-trace-id") == "boom-1"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/events?cursor={big}",
        "/v1/deliveries?cursor={big}",
        "/v1/deliveries?cursor={edge}",
    ],
)
async def test_a_forged_cursor_with_an_out_of_range_position_is_422(
    client: httpx.AsyncClient, path: str
) -> None:
    url = path.format(big=cursor_for(2**64 - 1), edge=cursor_for(2**63))
    assert_error(await client.get(url), 422, "VALIDATION_FAILED", "cursor")


@pytest.mark.parametrize("path", ["/v1/tenants", "/v1/deliveries", "/v1/endpoints"])
async def test_a_list_limit_above_500_is_refused(client: httpx.AsyncClient, path: str) -> None:
    assert_error(await client.get(path, params={"limit": "501"}), 422, "VALIDATION_FAILED", "limit")


# -- text that a database may choke on --------------------------------------------------

NUL = "a\x00b"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/endpoints/a%00b"),
        ("PATCH", "/v1/endpoints/a%00b"),
        ("DELETE", "/v1/endpoints/a%00b"),
        ("POST", "/v1/endpoints/a%00b/replay"),
        ("GET", "/v1/events/a%00b"),
        ("GET", "/v1/deliveries/a%00b"),
        ("POST", "/v1/deliveries/a%00b/retry"),
        ("GET", "/v1/event-types/a%00b"),
        ("POST", "/v1/tenants/a%00b/keys"),
    ],
)
async def test_an_id_with_a_nul_character_is_simply_not_found(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    kwargs: dict[str, Any] = {"json": {}} if method in ("PATCH", "POST") else {}
    r = await client.request(method, path, **kwargs)
    assert r.status_code in (404, 422), r.text
    assert_error(r, r.status_code, "NOT_FOUND" if r.status_code == 404 else "VALIDATION_FAILED")


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/events", {"type": NUL}),
        ("/v1/deliveries", {"endpoint_id": NUL}),
        ("/v1/deliveries", {"event_type": NUL}),
        ("/v1/endpoints", {"cursor": cursor_for(NUL)}),
        ("/v1/tenants", {"cursor": cursor_for(NUL)}),
    ],
)
async def test_a_filter_with_a_nul_character_matches_nothing_or_is_refused(
    client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    r = await client.get(path, params=params)
    if r.status_code == 422:
        assert_error(r, 422, "VALIDATION_FAILED")
    else:
        assert r.status_code == 200, r.text
        assert r.json()["next_cursor"] is None


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/endpoints", {"url": HOOK, "description": NUL}),
        ("PUT", "/v1/event-types/loyalty.scored", {"schema": {}, "description": NUL}),
        ("POST", "/v1/tenants/default/keys", {"name": NUL}),
    ],
)
async def test_a_text_field_with_a_nul_character_is_stored_or_refused_never_a_500(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any]
) -> None:
    r = await client.request(method, path, json=body)
    if r.status_code == 422:
        assert_error(r, 422, "VALIDATION_FAILED")
    else:
        assert r.status_code in (200, 201), r.text
        assert NUL in r.json().values()


async def test_event_data_with_a_nul_character_is_kept_as_sent(
    client: httpx.AsyncClient,
) -> None:
    data = opt_in(NUL, note=NUL)
    r = await client.post("/v1/events", json={"type": OPT_IN, "data": data})
    assert r.status_code == 202, r.text
    assert (await get_json(client, f"/v1/events/{r.json()['id']}"))["data"] == data
