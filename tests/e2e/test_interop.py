"""Interop: what ``croupier serve`` sends verifies with the ``standardwebhooks`` and ``svix``
packages.

The receivers here know nothing of croupier: they check each request with the reference
library from PyPI and answer 400 to anything it refuses, so an unverifiable delivery fails
in croupier too. A receiver holding a tampered secret is the negative control.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError as SvixVerificationError

from croupier import __version__
from tests.e2e.conftest import ReceiverFactory
from tests.e2e.harness import (
    Arrival,
    Launcher,
    Responder,
    create_endpoint,
    eventually,
    opted_in,
    publish,
    wait_statuses,
)

ENVELOPE_KEYS = {
    "id",
    "type",
    "schema_version",
    "tenant_id",
    "occurred_at",
    "delivered_at",
    "data",
    "meta",
}
TRACEPARENT = re.compile(r"^00-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-01$")
ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
HEX_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"

#: event id -> (data, headers sent with the publish, the trace id croupier should carry)
EVENTS: dict[str, tuple[dict[str, Any], dict[str, str], str | None]] = {
    "evt_interop_plain": (opted_in(), {"X-Trace-Id": "e2e-trace-0001"}, "e2e-trace-0001"),
    "evt_interop_hex_trace": (opted_in(seq=2), {"X-Trace-Id": HEX_TRACE}, HEX_TRACE),
    "evt_interop_traceparent": (
        opted_in(seq=3),
        {"traceparent": f"00-{HEX_TRACE[::-1]}-00f067aa0ba902b7-01"},
        HEX_TRACE[::-1],
    ),
    # Signed over the exact UTF-8 bytes: a receiver that re-encodes must still agree.
    "evt_interop_unicode": (
        opted_in(player_id="jöran ✓ 🎰", note='quotes " and \\ and \n'),
        {"X-Trace-Id": "e2e-trace-0004"},
        "e2e-trace-0004",
    ),
    # No trace id sent: croupier makes one up and still sends it everywhere.
    "evt_interop_no_trace": (opted_in(seq=5), {}, None),
}


def verifying(secret: str) -> Responder:
    """A receiver's check: 200 if the reference library verifies the request, else 400."""
    webhook = Webhook(secret)

    def respond(body: bytes, headers: dict[str, str]) -> int:
        try:
            webhook.verify(body, headers)
        except WebhookVerificationError:
            return 400
        return 200

    return respond


def tampered(secret: str) -> str:
    """The same secret with one bit of its key flipped."""
    key = bytearray(base64.b64decode(secret.removeprefix("whsec_")))
    key[0] ^= 0x01
    return "whsec_" + base64.b64encode(bytes(key)).decode()


async def test_every_delivery_verifies_with_the_standardwebhooks_package(
    launcher: Launcher, receivers: ReceiverFactory
) -> None:
    good = await receivers()
    forged = await receivers()
    serve = await launcher.serve(environment="e2e-interop")
    async with serve.api() as api:
        endpoint = await create_endpoint(api, good.url(), retry_schedule=[0])
        secret = endpoint["secret"]
        assert secret.startswith("whsec_")
        good.respond = verifying(secret)
        other = await create_endpoint(api, forged.url(), retry_schedule=[0])
        forged.respond = verifying(tampered(other["secret"]))

        for event_id, (data, headers, _) in EVENTS.items():
            published = await publish(api, event_id, data, headers)
            assert published["deliveries"] == 2
        occurred = await publish(
            api, "evt_interop_occurred", opted_in(seq=6), None, "2026-01-02T03:04:05.678+02:00"
        )
        assert occurred["deliveries"] == 2
        expected_ids = {*EVENTS, "evt_interop_occurred"}

        await eventually(
            lambda: good.ids() == expected_ids and forged.ids() == expected_ids,
            within_s=20,
            what="every event at both receivers",
        )
        count = len(expected_ids)
        await wait_statuses(api, {"succeeded": count, "dead": count}, within_s=20)
        dead = (await api.get("/v1/deliveries", params={"endpoint_id": other["id"]})).json()
        assert {d["last_status_code"] for d in dead["data"]} == {400}
        tenant_id = await _default_tenant_id(api)
        schema_version = (await api.get("/v1/event-types/PLAYER_OPTED_IN")).json()["schema_version"]
        stored_traces = {
            event_id: (await api.get(f"/v1/events/{event_id}")).json()["trace_id"]
            for event_id in expected_ids
        }

    assert len(good.arrivals) == count, "each event once: all were accepted the first time"
    for arrival in good.arrivals:
        envelope = Webhook(secret).verify(arrival.body, arrival.headers)
        # The other widely used Standard Webhooks library takes the same request as it is
        # (it raises when a request does not verify).
        SvixWebhook(secret).verify(arrival.body, arrival.headers)
        _check_headers(arrival, stored_traces[arrival.webhook_id])
        _check_envelope(envelope, arrival, tenant_id=tenant_id, schema_version=schema_version)
        _check_forgeries_fail(arrival, secret)
    by_id = {a.webhook_id: a for a in good.arrivals}
    for event_id, (_, _, trace_id) in EVENTS.items():
        if trace_id is not None:
            assert by_id[event_id].headers["x-trace-id"] == trace_id
    hex_parent = TRACEPARENT.match(by_id["evt_interop_hex_trace"].headers["traceparent"])
    assert hex_parent is not None
    assert hex_parent["trace"] == HEX_TRACE, "a W3C-shaped trace id is carried as it is"
    made_up = by_id["evt_interop_no_trace"].headers["x-trace-id"]
    assert made_up, "an event published without a trace id still gets one"
    occurred_at = by_id["evt_interop_occurred"].envelope()["occurred_at"]
    assert occurred_at == "2026-01-02T01:04:05.678Z"


def _check_headers(arrival: Arrival, stored_trace_id: str) -> None:
    h = arrival.headers
    envelope = arrival.envelope()
    assert h["webhook-id"] == envelope["id"]
    assert abs(int(h["webhook-timestamp"]) - arrival.at) <= 5
    assert h["webhook-signature"].startswith("v1,")
    assert h["content-type"] == "application/json"
    assert h["user-agent"] == f"Croupier-Webhooks/{__version__}"
    assert h["x-trace-id"] == stored_trace_id
    assert envelope["meta"]["trace_id"] == stored_trace_id
    parent = TRACEPARENT.match(h["traceparent"])
    assert parent is not None, h["traceparent"]
    assert parent["trace"] != "0" * 32
    assert parent["span"] != "0" * 16


def _check_envelope(
    envelope: Any, arrival: Arrival, *, tenant_id: str, schema_version: str
) -> None:
    assert set(envelope) == ENVELOPE_KEYS
    assert set(envelope["meta"]) == {"attempt", "environment", "trace_id"}
    assert envelope["meta"]["attempt"] == 1
    assert envelope["meta"]["environment"] == "e2e-interop"
    assert envelope["type"] == "PLAYER_OPTED_IN"
    assert envelope["schema_version"] == schema_version
    assert envelope["tenant_id"] == tenant_id
    assert ISO_MS_Z.match(envelope["occurred_at"]), envelope["occurred_at"]
    assert ISO_MS_Z.match(envelope["delivered_at"]), envelope["delivered_at"]
    if arrival.webhook_id in EVENTS:
        assert envelope["data"] == EVENTS[arrival.webhook_id][0]
        assert envelope["delivered_at"] >= envelope["occurred_at"]


def _check_forgeries_fail(arrival: Arrival, secret: str) -> None:
    """The negative controls: the reference library refuses what was not signed so."""
    with pytest.raises(WebhookVerificationError):
        Webhook(tampered(secret)).verify(arrival.body, arrival.headers)
    altered = arrival.body.replace(b'"attempt":1', b'"attempt":2', 1)
    assert altered != arrival.body
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(altered, arrival.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(arrival.body, {**arrival.headers, "webhook-id": "evt_other"})
    with pytest.raises(SvixVerificationError):
        SvixWebhook(tampered(secret)).verify(arrival.body, arrival.headers)
    with pytest.raises(SvixVerificationError):
        SvixWebhook(secret).verify(altered, arrival.headers)


async def _default_tenant_id(api: httpx.AsyncClient) -> str:
    tenants = (await api.get("/v1/tenants")).json()["data"]
    found: list[str] = [t["id"] for t in tenants if t["name"] == "default"]
    assert len(found) == 1, tenants
    return found[0]
