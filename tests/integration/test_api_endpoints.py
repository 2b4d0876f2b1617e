"""Endpoints through the REST API: defaults, reading, paging, partial change, deletion, and
every rule an endpoint's fields must follow."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import httpx
import pytest

from croupier.bootstrap import Container
from tests.integration.conftest import (
    OPT_IN,
    ReceiverFactory,
    assert_error,
    create_endpoint,
    cursor_for,
    get_json,
    list_all,
    opt_in,
    publish,
)
from tests.support.receiver import Receiver, Reply

DEFAULT_TYPES = [
    "round.completed",
    "wallet.deposit_confirmed",
    "wallet.withdrawal_completed",
    "player.limit_reached",
    "system.maintenance",
]
DEFAULT_SCHEDULE = [0, 30, 120, 600, 3600, 14400, 43200, 86400]
HOOK = "https://hooks.example.com/croupier"


def a_secret(n_bytes: int = 32, fill: bytes = b"k") -> str:
    return "whsec_" + base64.b64encode(fill * n_bytes).decode()


# -- create -------------------------------------------------------------------------------


async def test_an_endpoint_created_with_only_a_url_gets_the_documented_defaults(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("/v1/endpoints", json={"url": HOOK})
    assert r.status_code == 201, r.text
    ep = r.json()
    assert ep["id"].startswith("ep_")
    assert ep["url"] == HOOK
    assert ep["event_types"] == DEFAULT_TYPES
    assert ep["timeout_ms"] == 10000
    assert ep["retry_schedule"] == DEFAULT_SCHEDULE
    assert ep["headers"] == {}
    assert ep["ordered"] is False
    assert ep["disabled"] is False
    assert ep["disabled_reason"] is None
    assert ep["description"] == ""
    assert ep["dialect"] == "standard"


async def test_a_generated_secret_is_whsec_and_the_base64_of_24_random_bytes(
    client: httpx.AsyncClient,
) -> None:
    first = (await client.post("/v1/endpoints", json={"url": HOOK})).json()["secret"]
    second = (await client.post("/v1/endpoints", json={"url": HOOK})).json()["secret"]
    for secret in (first, second):
        assert secret.startswith("whsec_")
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        assert len(key) == 24
    assert first != second


async def test_an_endpoint_keeps_every_field_it_was_created_with(
    client: httpx.AsyncClient,
) -> None:
    secret = a_secret()
    body = {
        "url": "http://127.0.0.1:9/in?brand=7",
        "event_types": [OPT_IN, "round.completed"],
        "secret": secret,
        "headers": {"X-Operator-Key": "abc"},
        "timeout_ms": 2500,
        "retry_schedule": [0, 5, 60],
        "ordered": True,
        "description": "brand 7",
    }
    r = await client.post("/v1/endpoints", json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["secret"] == secret
    fetched = await get_json(client, f"/v1/endpoints/{created['id']}")
    for name, value in body.items():
        if name != "secret":
            assert fetched[name] == value, name


async def test_an_endpoint_created_disabled_says_why(client: httpx.AsyncClient) -> None:
    ep = await create_endpoint(client, HOOK, disabled=True)
    assert ep["disabled"] is True
    assert ep["disabled_reason"]


async def test_the_secret_is_shown_on_create_and_never_again(client: httpx.AsyncClient) -> None:
    ep = await create_endpoint(client, HOOK)
    assert ep["secret"].startswith("whsec_")
    fetched = await get_json(client, f"/v1/endpoints/{ep['id']}")
    listed = await list_all(client, "/v1/endpoints")
    r = await client.patch(f"/v1/endpoints/{ep['id']}", json={"description": "x"})
    assert r.status_code == 200, r.text
    rotated = await client.patch(f"/v1/endpoints/{ep['id']}", json={"secret": a_secret()})
    assert rotated.status_code == 200, rotated.text
    for shown in (fetched, *listed, r.json(), rotated.json()):
        assert "secret" not in shown
        assert ep["secret"] not in str(shown)


# -- read and list ------------------------------------------------------------------------


async def test_getting_an_endpoint_returns_what_was_created(client: httpx.AsyncClient) -> None:
    ep = await create_endpoint(client, HOOK, description="main")
    fetched = await get_json(client, f"/v1/endpoints/{ep['id']}")
    assert fetched == {k: v for k, v in ep.items() if k != "secret"}


async def test_getting_an_endpoint_that_does_not_exist_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/endpoints/ep_01HZZZZZZZZZZZZZZZZZZZZZZZ")
    assert_error(r, 404, "NOT_FOUND")


async def test_listing_endpoints_pages_through_every_one_exactly_once(
    client: httpx.AsyncClient,
) -> None:
    made = {(await create_endpoint(client, f"{HOOK}/{n}"))["id"] for n in range(5)}
    first = await get_json(client, "/v1/endpoints", limit="2")
    assert len(first["data"]) == 2
    assert first["next_cursor"] is not None
    second = await get_json(client, "/v1/endpoints", limit="2", cursor=first["next_cursor"])
    assert len(second["data"]) == 2
    assert second["next_cursor"] is not None
    third = await get_json(client, "/v1/endpoints", limit="2", cursor=second["next_cursor"])
    assert len(third["data"]) == 1
    assert third["next_cursor"] is None
    seen = [e["id"] for page in (first, second, third) for e in page["data"]]
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == made


async def test_a_list_that_fits_in_one_page_has_no_next_cursor(client: httpx.AsyncClient) -> None:
    await create_endpoint(client, HOOK)
    await create_endpoint(client, HOOK)
    page = await get_json(client, "/v1/endpoints", limit="2")
    assert len(page["data"]) == 2
    assert page["next_cursor"] is None


@pytest.mark.parametrize("limit", ["0", "-1", "501", "many"])
async def test_a_list_limit_out_of_range_is_refused(client: httpx.AsyncClient, limit: str) -> None:
    r = await client.get("/v1/endpoints", params={"limit": limit})
    assert_error(r, 422, "VALIDATION_FAILED", "limit")


@pytest.mark.parametrize("cursor", ["not-a-cursor!", cursor_for(12), cursor_for(None), "e30"])
async def test_an_endpoint_cursor_not_made_by_croupier_is_refused(
    client: httpx.AsyncClient, cursor: str
) -> None:
    r = await client.get("/v1/endpoints", params={"cursor": cursor})
    assert_error(r, 422, "VALIDATION_FAILED", "cursor")


# -- PATCH --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("url", "https://other.example.com/hook"),
        ("event_types", ["round.completed"]),
        ("headers", {"X-Brand": "7"}),
        ("timeout_ms", 3000),
        ("retry_schedule", [0, 10]),
        ("ordered", True),
        ("description", "renamed"),
    ],
)
async def test_patch_changes_only_the_field_it_names(
    client: httpx.AsyncClient, field: str, value: Any
) -> None:
    ep = await create_endpoint(client, HOOK, headers={"X-A": "1"}, description="first")
    before = await get_json(client, f"/v1/endpoints/{ep['id']}")
    r = await client.patch(f"/v1/endpoints/{ep['id']}", json={field: value})
    assert r.status_code == 200, r.text
    after = await get_json(client, f"/v1/endpoints/{ep['id']}")
    assert r.json() == after
    assert after[field] == value
    unchanged = set(before) - {field, "updated_at"}
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}


async def test_patch_with_an_empty_body_changes_nothing(client: httpx.AsyncClient) -> None:
    ep = await create_endpoint(client, HOOK)
    before = await get_json(client, f"/v1/endpoints/{ep['id']}")
    r = await client.patch(f"/v1/endpoints/{ep['id']}", json={})
    assert r.status_code == 200, r.text
    after = await get_json(client, f"/v1/endpoints/{ep['id']}")
    assert {k: v for k, v in after.items() if k != "updated_at"} == {
        k: v for k, v in before.items() if k != "updated_at"
    }


async def test_disabling_an_endpoint_records_a_reason_and_enabling_clears_it(
    client: httpx.AsyncClient,
) -> None:
    ep = await create_endpoint(client, HOOK)
    off = await client.patch(f"/v1/endpoints/{ep['id']}", json={"disabled": True})
    assert off.status_code == 200, off.text
    assert off.json()["disabled"] is True
    assert off.json()["disabled_reason"]
    on = await client.patch(f"/v1/endpoints/{ep['id']}", json={"disabled": False})
    assert on.status_code == 200, on.text
    assert on.json()["disabled"] is False
    assert on.json()["disabled_reason"] is None


@pytest.mark.parametrize("field", ["tenant_id", "id", "secrets", "created_at", "URL"])
async def test_patch_refuses_a_field_it_does_not_know(
    client: httpx.AsyncClient, field: str
) -> None:
    ep = await create_endpoint(client, HOOK)
    r = await client.patch(f"/v1/endpoints/{ep['id']}", json={field: "x"})
    assert_error(r, 422, "VALIDATION_FAILED", field)
    assert (await get_json(client, f"/v1/endpoints/{ep['id']}"))["url"] == HOOK


@pytest.mark.parametrize(
    "field",
    [
        "url",
        "secret",
        "headers",
        "timeout_ms",
        "retry_schedule",
        "ordered",
        "description",
        "disabled",
        "dialect",
    ],
)
async def test_patch_refuses_null_for_a_field_that_cannot_be_null(
    client: httpx.AsyncClient, field: str
) -> None:
    ep = await create_endpoint(client, HOOK)
    before = await get_json(client, f"/v1/endpoints/{ep['id']}")
    r = await client.patch(f"/v1/endpoints/{ep['id']}", json={field: None})
    assert_error(r, 422, "VALIDATION_FAILED", field)
    assert await get_json(client, f"/v1/endpoints/{ep['id']}") == before


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"url": "ftp://files.example.com/"}, "INVALID_URL", "url"),
        ({"event_types": []}, "VALIDATION_FAILED", "event_types"),
        ({"event_types": ["no.such.type"]}, "VALIDATION_FAILED", "event_types.0"),
        ({"timeout_ms": 50}, "VALIDATION_FAILED", "timeout_ms"),
        ({"retry_schedule": [10]}, "VALIDATION_FAILED", "retry_schedule.0"),
        ({"headers": {"webhook-signature": "v1,x"}}, "VALIDATION_FAILED", "headers"),
        ({"secret": "not-a-secret"}, "VALIDATION_FAILED", "secret"),
    ],
)
async def test_patch_holds_the_same_rules_as_create_and_changes_nothing_when_refused(
    client: httpx.AsyncClient, change: dict[str, Any], code: str, field: str
) -> None:
    ep = await create_endpoint(client, HOOK)
    before = await get_json(client, f"/v1/endpoints/{ep['id']}")
    r = await client.patch(f"/v1/endpoints/{ep['id']}", json={**change, "description": "new"})
    assert_error(r, 422, code, field)
    assert await get_json(client, f"/v1/endpoints/{ep['id']}") == before


async def test_patch_of_an_endpoint_that_does_not_exist_is_404(client: httpx.AsyncClient) -> None:
    r = await client.patch("/v1/endpoints/ep_missing", json={"description": "x"})
    assert_error(r, 404, "NOT_FOUND")


async def test_a_new_secret_signs_the_next_delivery(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    ep = await create_endpoint(client, receiver.url())
    new_secret = a_secret(24, b"n")
    r = await client.patch(f"/v1/endpoints/{ep['id']}", json={"secret": new_secret})
    assert r.status_code == 200, r.text
    await publish(client)
    await container.dispatcher.run_until_idle()
    [req] = receiver.requests
    signed = f"{req.headers['webhook-id']}.{req.headers['webhook-timestamp']}.".encode() + req.body
    expected = base64.b64encode(hmac.new(b"n" * 24, signed, hashlib.sha256).digest()).decode()
    assert req.headers["webhook-signature"] == f"v1,{expected}"


async def test_a_disabled_endpoint_gets_its_queued_deliveries_once_enabled_again(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    ep = await create_endpoint(client, receiver.url())
    await publish(client)
    await client.patch(f"/v1/endpoints/{ep['id']}", json={"disabled": True})
    await container.dispatcher.run_until_idle()
    assert receiver.requests == []
    await client.patch(f"/v1/endpoints/{ep['id']}", json={"disabled": False})
    await container.dispatcher.run_until_idle()
    assert len(receiver.requests) == 1


# -- DELETE -------------------------------------------------------------------------------


async def test_a_deleted_endpoint_is_gone_from_every_route(client: httpx.AsyncClient) -> None:
    ep = await create_endpoint(client, HOOK)
    keep = await create_endpoint(client, HOOK)
    r = await client.delete(f"/v1/endpoints/{ep['id']}")
    assert r.status_code == 204
    assert r.content == b""
    assert_error(await client.get(f"/v1/endpoints/{ep['id']}"), 404, "NOT_FOUND")
    assert_error(await client.delete(f"/v1/endpoints/{ep['id']}"), 404, "NOT_FOUND")
    assert_error(
        await client.patch(f"/v1/endpoints/{ep['id']}", json={"description": "x"}),
        404,
        "NOT_FOUND",
    )
    assert_error(await client.post(f"/v1/endpoints/{ep['id']}/replay"), 404, "NOT_FOUND")
    assert [e["id"] for e in await list_all(client, "/v1/endpoints")] == [keep["id"]]


async def test_a_deleted_endpoint_gets_no_new_deliveries(client: httpx.AsyncClient) -> None:
    ep = await create_endpoint(client, HOOK)
    await client.delete(f"/v1/endpoints/{ep['id']}")
    assert (await publish(client))["deliveries"] == 0


async def test_deleting_an_endpoint_cancels_what_it_had_not_received_and_keeps_its_history(
    client: httpx.AsyncClient, container: Container, start_receiver: ReceiverFactory
) -> None:
    # first request succeeds, the second fails (and will retry), the third is never sent
    receiver = await start_receiver(lambda _p, n: Reply(200 if n == 0 else 500))
    ep = await create_endpoint(client, receiver.url(), retry_schedule=[0, 60])
    delivered = await publish(client, data=opt_in("p1"))
    await container.dispatcher.run_until_idle()
    failing = await publish(client, data=opt_in("p2"))
    await container.dispatcher.run_until_idle()
    pending = await publish(client, data=opt_in("p3"))

    r = await client.delete(f"/v1/endpoints/{ep['id']}")
    assert r.status_code == 204

    async def status_of(event: dict[str, Any]) -> str:
        [d] = (await get_json(client, f"/v1/events/{event['id']}"))["deliveries"]
        status: str = d["status"]
        return status

    assert await status_of(delivered) == "succeeded"
    assert await status_of(failing) == "cancelled"
    assert await status_of(pending) == "cancelled"
    cancelled = await list_all(client, "/v1/deliveries", status="cancelled")
    assert len(cancelled) == 2
    assert await container.dispatcher.run_until_idle() == 0
    assert len(receiver.requests) == 2


# -- what an endpoint's fields may hold ---------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://files.example.com/hook",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "example.com/hook",
        "http://user:pass@example.com/hook",
        "https://user@example.com/hook",
        "http://[::1/hook",
        "http://example.com:99999/hook",
        "http://example.com:0/hook",
        "http://",
        "http:///hook",
        "https://example.com/hook#section",
        "https://exa mple.com/hook",
        "",
        "http://example.com/" + "a" * 2100,
    ],
)
async def test_an_unacceptable_url_is_refused(client: httpx.AsyncClient, url: str) -> None:
    r = await client.post("/v1/endpoints", json={"url": url})
    assert_error(r, 422, "INVALID_URL", "url")
    assert await list_all(client, "/v1/endpoints") == []


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/hook", "https://hooks.example.com", "HTTPS://Example.COM/x?a=b"]
)
async def test_an_http_or_https_url_is_accepted(client: httpx.AsyncClient, url: str) -> None:
    ep = await create_endpoint(client, url)
    assert ep["url"] == url


async def test_the_url_is_required(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/endpoints", json={"event_types": [OPT_IN]})
    assert_error(r, 422, "VALIDATION_FAILED", "url")


@pytest.mark.parametrize(
    ("event_types", "field"),
    [
        ([], "event_types"),
        (["no.such.type"], "event_types.0"),
        ([OPT_IN, "round.complete"], "event_types.1"),
        ("round.completed", "event_types"),
        ([1], "event_types.0"),
    ],
)
async def test_event_types_must_be_a_non_empty_list_of_known_types(
    client: httpx.AsyncClient, event_types: Any, field: str
) -> None:
    r = await client.post("/v1/endpoints", json={"url": HOOK, "event_types": event_types})
    assert_error(r, 422, "VALIDATION_FAILED", field)


async def test_repeated_event_types_are_kept_once(client: httpx.AsyncClient) -> None:
    ep = await create_endpoint(client, HOOK, event_types=[OPT_IN, "round.completed", OPT_IN])
    assert ep["event_types"] == [OPT_IN, "round.completed"]


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        ([], "retry_schedule"),
        ([30, 60], "retry_schedule.0"),
        ([0, -5], "retry_schedule.1"),
        ([0, 30, -1], "retry_schedule.2"),
        ([0, 8 * 86400], "retry_schedule.1"),
        ([0, 1.5], "retry_schedule.1"),
        ([0, "30"], "retry_schedule.1"),
        ([0] * 31, "retry_schedule"),
        ("0,30", "retry_schedule"),
    ],
)
async def test_a_retry_schedule_must_start_at_0_and_hold_sane_delays(
    client: httpx.AsyncClient, schedule: Any, field: str
) -> None:
    r = await client.post("/v1/endpoints", json={"url": HOOK, "retry_schedule": schedule})
    assert_error(r, 422, "VALIDATION_FAILED", field)


async def test_a_single_immediate_attempt_is_a_valid_schedule(client: httpx.AsyncClient) -> None:
    ep = await create_endpoint(client, HOOK, retry_schedule=[0])
    assert ep["retry_schedule"] == [0]


@pytest.mark.parametrize("timeout_ms", [0, -1, 99, 60001, 10**12, "1000", True, 1500.5])
async def test_a_timeout_out_of_range_is_refused(
    client: httpx.AsyncClient, timeout_ms: Any
) -> None:
    r = await client.post("/v1/endpoints", json={"url": HOOK, "timeout_ms": timeout_ms})
    assert_error(r, 422, "VALIDATION_FAILED", "timeout_ms")


@pytest.mark.parametrize("timeout_ms", [100, 60000])
async def test_the_timeout_bounds_are_inclusive(client: httpx.AsyncClient, timeout_ms: int) -> None:
    ep = await create_endpoint(client, HOOK, timeout_ms=timeout_ms)
    assert ep["timeout_ms"] == timeout_ms


@pytest.mark.parametrize(
    "name",
    [
        "webhook-signature",
        "Webhook-Id",
        "webhook-timestamp",
        "Content-Type",
        "content-length",
        "User-Agent",
        "Host",
        "X-Trace-Id",
        "traceparent",
        "Transfer-Encoding",
    ],
)
async def test_a_header_croupier_sets_itself_cannot_be_overridden(
    client: httpx.AsyncClient, name: str
) -> None:
    r = await client.post("/v1/endpoints", json={"url": HOOK, "headers": {name: "x"}})
    assert_error(r, 422, "VALIDATION_FAILED", "headers")


@pytest.mark.parametrize(
    "headers",
    [
        {"Bad Name": "x"},
        {"X-Colon:": "x"},
        {"": "x"},
        {"X-A": "line\r\nX-Injected: 1"},
        {"X-A": "line\nbreak"},
        {"X-A": "nul\x00byte"},
        {"X-A": "bell\x07"},
        {"X-A": "v" * 4097},
        {f"X-H{n}": "x" for n in range(21)},
    ],
    ids=[
        "space-in-name",
        "colon-in-name",
        "empty-name",
        "crlf-injection",
        "line-feed",
        "nul-in-value",
        "control-char-in-value",
        "value-too-long",
        "too-many-headers",
    ],
)
async def test_a_header_that_http_cannot_carry_is_refused(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    r = await client.post("/v1/endpoints", json={"url": HOOK, "headers": headers})
    assert_error(r, 422, "VALIDATION_FAILED", "headers")


@pytest.mark.parametrize(
    "secret",
    [
        "k" * 32,
        "whsec_",
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"k" * 16).decode(),
        "whsec_" + base64.b64encode(b"k" * 65).decode(),
        "WHSEC_" + base64.b64encode(b"k" * 24).decode(),
    ],
)
async def test_a_secret_in_the_wrong_format_is_refused(
    client: httpx.AsyncClient, secret: str
) -> None:
    r = await client.post("/v1/endpoints", json={"url": HOOK, "secret": secret})
    assert_error(r, 422, "VALIDATION_FAILED", "secret")


@pytest.mark.parametrize("n_bytes", [24, 64])
async def test_a_secret_of_24_to_64_bytes_is_accepted(
    client: httpx.AsyncClient, n_bytes: int
) -> None:
    secret = a_secret(n_bytes)
    assert (await create_endpoint(client, HOOK, secret=secret))["secret"] == secret


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"description": "d" * 1001}, "description"),
        ({"dialect": "carrier-pigeon"}, "dialect"),
        ({"ordered": "yes"}, "ordered"),
        ({"disabled": 1}, "disabled"),
        ({"brand": "7"}, "brand"),
    ],
)
async def test_other_fields_are_checked_too(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    r = await client.post("/v1/endpoints", json={"url": HOOK, **body})
    assert_error(r, 422, "VALIDATION_FAILED", field)
    assert await list_all(client, "/v1/endpoints") == []
