"""Signing dialects and body formats, end to end: what the API accepts for each, and what a
real receiver gets on the wire, checked with croupier's receiver SDK and by hand."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from croupier.bootstrap import Container
from croupier.domain.clock import ManualClock
from croupier.receiver import MissingHeaderError, Verifier
from croupier.receiver.verify import Dialect
from tests.integration.conftest import (
    OPT_IN,
    assert_error,
    create_endpoint,
    get_json,
    list_all,
    opt_in,
    publish,
)
from tests.support.receiver import Received, Receiver

#: An IP literal (the tests allow loopback): creating it asks no DNS server.
HOOK = "http://127.0.0.1:9/croupier"
#: A tenant's own type whose data may carry a field named ``event_type`` of any value.
LOOSE_TYPE = "loyalty.scored"
LOOSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "integer"}, "event_type": {"type": "string"}},
    "required": ["score"],
}


def whsec(n_bytes: int = 32, fill: bytes = b"k") -> str:
    return "whsec_" + base64.b64encode(fill * n_bytes).decode()


def whsk(seed: bytes) -> str:
    return "whsk_" + base64.b64encode(seed).decode()


def whpk_of(seed: bytes) -> str:
    """The public key of an Ed25519 seed, derived with ``cryptography`` directly."""
    raw = (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    return "whpk_" + base64.b64encode(raw).decode()


def verifier(
    clock: ManualClock, dialect: Dialect, key: str, *, header_prefix: str = "Croupier"
) -> Verifier:
    """A receiver's verifier whose "now" is the test's clock (croupier signs with it too)."""
    return Verifier(dialect, key, header_prefix=header_prefix, now=lambda: clock.now_ms() / 1000)


async def deliver_one(
    client: httpx.AsyncClient,
    container: Container,
    receiver: Receiver,
    event_type: str = OPT_IN,
    data: dict[str, Any] | None = None,
) -> tuple[str, Received]:
    """Publish one event, deliver it, and return its id and the one request that arrived."""
    before = len(receiver.requests)
    event = await publish(client, event_type, data)
    await container.dispatcher.run_until_idle()
    [request] = receiver.requests[before:]
    event_id: str = event["id"]
    return event_id, request


async def endpoint_secret(client: httpx.AsyncClient, endpoint_id: str) -> dict[str, Any]:
    return await get_json(client, f"/v1/endpoints/{endpoint_id}/secret")


async def put_loose_type(client: httpx.AsyncClient) -> None:
    r = await client.put(f"/v1/event-types/{LOOSE_TYPE}", json={"schema": LOOSE_SCHEMA})
    assert r.status_code == 200, r.text


# -- standard -------------------------------------------------------------------------------


async def test_an_endpoint_signs_in_the_standard_dialect_as_json_envelopes_by_default(
    client: httpx.AsyncClient,
    container: Container,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    ep = await create_endpoint(client, receiver.url())
    assert (ep["dialect"], ep["header_prefix"], ep["format"]) == (
        "standard",
        "Croupier",
        "envelope",
    )
    event_id, req = await deliver_one(client, container, receiver)
    assert req.headers["webhook-id"] == event_id
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", req.headers["webhook-signature"])
    assert int(req.headers["webhook-timestamp"]) == clock.now_ms() // 1000
    # by hand: HMAC-SHA256 over "{id}.{timestamp}.{body}" keyed with the whsec_ bytes
    key = base64.b64decode(ep["secret"].removeprefix("whsec_"))
    signed = f"{event_id}.{req.headers['webhook-timestamp']}.".encode() + req.body
    expected = base64.b64encode(hmac.digest(key, signed, "sha256")).decode()
    assert req.headers["webhook-signature"] == f"v1,{expected}"
    event = verifier(clock, "standard", ep["secret"]).verify(req.headers, req.body)
    assert (event.id, event.type, event.format) == (event_id, OPT_IN, "envelope")
    body = orjson.loads(req.body)
    assert (body["id"], body["type"], body["data"]) == (event_id, OPT_IN, opt_in())


async def test_a_standard_delivery_verifies_with_the_standardwebhooks_package(
    client: httpx.AsyncClient,
    container: Container,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    # The package checks webhook-timestamp against the real time (5 minutes either way).
    # The clock fixture is a ManualClock that starts at the real time and this test never
    # advances it, so the timestamp croupier signs is within seconds of the package's now.
    assert abs(clock.now_ms() - ManualClock().now_ms()) < 60_000
    ep = await create_endpoint(client, receiver.url())
    event_id, req = await deliver_one(client, container, receiver)
    payload = Webhook(ep["secret"]).verify(req.body, req.headers)
    assert payload["id"] == event_id
    with pytest.raises(WebhookVerificationError):
        Webhook(whsec(24, b"x")).verify(req.body, req.headers)


# -- ed25519 --------------------------------------------------------------------------------


async def test_an_ed25519_endpoint_signs_v1a_verifiable_with_its_public_key(
    client: httpx.AsyncClient,
    container: Container,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    ep = await create_endpoint(client, receiver.url(), dialect="ed25519")
    seed = base64.b64decode(ep["secret"].removeprefix("whsk_"), validate=True)
    assert ep["secret"].startswith("whsk_") and len(seed) == 32
    shown = await endpoint_secret(client, ep["id"])
    assert shown == {"secret": ep["secret"], "public_key": whpk_of(seed)}
    event_id, req = await deliver_one(client, container, receiver)
    assert req.headers["webhook-id"] == event_id
    scheme, _, signature = req.headers["webhook-signature"].partition(",")
    assert scheme == "v1a"
    # by hand: Ed25519 over "{id}.{timestamp}.{body}" with the public key croupier shows
    public = base64.b64decode(shown["public_key"].removeprefix("whpk_"))
    signed = f"{event_id}.{req.headers['webhook-timestamp']}.".encode() + req.body
    Ed25519PublicKey.from_public_bytes(public).verify(base64.b64decode(signature), signed)
    event = verifier(clock, "ed25519", shown["public_key"]).verify(req.headers, req.body)
    assert event.id == event_id


@pytest.mark.parametrize("form", ["seed", "seed-and-public-key"])
async def test_an_ed25519_endpoint_keeps_a_signing_key_it_is_given(
    client: httpx.AsyncClient,
    container: Container,
    receiver: Receiver,
    clock: ManualClock,
    form: str,
) -> None:
    seed = bytes(range(32))
    public = base64.b64decode(whpk_of(seed).removeprefix("whpk_"))
    secret = whsk(seed if form == "seed" else seed + public)
    ep = await create_endpoint(client, receiver.url(), dialect="ed25519", secret=secret)
    assert ep["secret"] == secret
    assert (await endpoint_secret(client, ep["id"]))["public_key"] == whpk_of(seed)
    _, req = await deliver_one(client, container, receiver)
    verifier(clock, "ed25519", whpk_of(seed)).verify(req.headers, req.body)


# -- hmac-hex -------------------------------------------------------------------------------


async def test_an_hmac_hex_endpoint_signs_timestamp_and_body_under_its_header_prefix(
    client: httpx.AsyncClient,
    container: Container,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    secret = "shared-secret-of-the-operator-42"
    ep = await create_endpoint(
        client, receiver.url(), dialect="hmac-hex", header_prefix="Example", secret=secret
    )
    assert ep["header_prefix"] == "Example"
    event_id, req = await deliver_one(client, container, receiver)
    assert req.headers["webhook-id"] == event_id
    timestamp = req.headers["x-example-timestamp"]
    assert int(timestamp) == clock.now_ms() // 1000
    # by hand: hex HMAC-SHA256 over "{timestamp}.{body}", keyed with the secret string
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + req.body, hashlib.sha256)
    assert req.headers["x-example-signature"] == f"sha256={expected.hexdigest()}"
    assert not {"webhook-signature", "webhook-timestamp", "x-croupier-signature"} & set(req.headers)
    event = verifier(clock, "hmac-hex", secret, header_prefix="Example").verify(
        req.headers, req.body
    )
    assert event.id == event_id
    with pytest.raises(MissingHeaderError, match="X-Croupier-Signature"):
        verifier(clock, "hmac-hex", secret).verify(req.headers, req.body)


async def test_an_hmac_hex_endpoint_generates_a_whsec_secret_and_uses_the_croupier_prefix(
    client: httpx.AsyncClient,
    container: Container,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    ep = await create_endpoint(client, receiver.url(), dialect="hmac-hex")
    assert ep["secret"].startswith("whsec_")
    assert ep["header_prefix"] == "Croupier"
    assert await endpoint_secret(client, ep["id"]) == {"secret": ep["secret"]}
    _, req = await deliver_one(client, container, receiver)
    assert req.headers["x-croupier-signature"].startswith("sha256=")
    verifier(clock, "hmac-hex", ep["secret"]).verify(req.headers, req.body)


# -- bearer ---------------------------------------------------------------------------------


async def test_a_bearer_endpoint_sends_its_key_and_the_attempt_log_never_keeps_it(
    client: httpx.AsyncClient,
    container: Container,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    ep = await create_endpoint(
        client, receiver.url(), dialect="bearer", headers={"X-Operator-Key": "op-value"}
    )
    key = ep["secret"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", key), key
    event_id, req = await deliver_one(client, container, receiver)
    assert req.headers["authorization"] == f"Bearer {key}"
    assert req.headers["webhook-id"] == event_id
    assert not {"webhook-signature", "webhook-timestamp"} & set(req.headers)
    event = verifier(clock, "bearer", key).verify(req.headers, req.body)
    assert (event.id, event.timestamp) == (event_id, None)
    [row] = await list_all(client, "/v1/deliveries")
    detail = await get_json(client, f"/v1/deliveries/{row['id']}")
    [attempt] = detail["attempt_log"]
    assert attempt["request_headers"]["Authorization"] == "[redacted]"
    assert attempt["request_headers"]["X-Operator-Key"] == "[redacted]"
    assert attempt["request_headers"]["webhook-id"] == event_id
    assert key not in orjson.dumps(detail).decode()


async def test_a_bearer_endpoint_keeps_a_key_it_is_given(
    client: httpx.AsyncClient,
    container: Container,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    key = "operator-api-key_0123456789.ABC~"
    ep = await create_endpoint(client, receiver.url(), dialect="bearer", secret=key)
    assert ep["secret"] == key
    _, req = await deliver_one(client, container, receiver)
    assert req.headers["authorization"] == f"Bearer {key}"
    verifier(clock, "bearer", key).verify(req.headers, req.body)


# -- the data body format -------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["standard", "hmac-hex"])
async def test_the_data_format_posts_the_events_fields_flat_with_its_type(
    client: httpx.AsyncClient,
    container: Container,
    receiver: Receiver,
    clock: ManualClock,
    dialect: Dialect,
) -> None:
    ep = await create_endpoint(client, receiver.url(), format="data", dialect=dialect)
    assert ep["format"] == "data"
    data = opt_in("p7", tier=3)
    event_id, req = await deliver_one(client, container, receiver, data=data)
    assert orjson.loads(req.body) == {**data, "event_type": OPT_IN}
    assert req.headers["webhook-id"] == event_id
    event = verifier(clock, dialect, ep["secret"]).verify(req.headers, req.body)
    assert (event.id, event.type, event.format) == (event_id, OPT_IN, "data")
    assert event.data == {k: v for k, v in data.items() if k != "event_type"}


async def test_in_the_data_format_croupiers_event_type_wins_over_a_data_field_of_that_name(
    client: httpx.AsyncClient,
    container: Container,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    await put_loose_type(client)
    ep = await create_endpoint(client, receiver.url(), format="data", event_types=[LOOSE_TYPE])
    data = {"score": 5, "event_type": "forged.type"}
    _, req = await deliver_one(client, container, receiver, LOOSE_TYPE, data)
    assert orjson.loads(req.body) == {"score": 5, "event_type": LOOSE_TYPE}
    verifier(clock, "standard", ep["secret"]).verify(req.headers, req.body)


async def test_switching_an_endpoint_to_the_data_format_changes_the_next_body(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    ep = await create_endpoint(client, receiver.url())
    _, first = await deliver_one(client, container, receiver)
    r = await client.patch(f"/v1/endpoints/{ep['id']}", json={"format": "data"})
    assert r.status_code == 200, r.text
    assert r.json()["format"] == "data"
    _, second = await deliver_one(client, container, receiver)
    assert set(orjson.loads(first.body)) >= {"id", "type", "data", "meta"}
    assert orjson.loads(second.body) == {**opt_in(), "event_type": OPT_IN}


# -- what the API accepts -------------------------------------------------------------------
# One container per test is the costly part: the rules are checked case by case in a loop,
# and each failure names its case.


async def refusals(
    client: httpx.AsyncClient, bodies: list[dict[str, Any]], field: str
) -> list[tuple[dict[str, Any], int, str | None]]:
    """The cases among ``bodies`` that creating an endpoint did not refuse as it should."""
    wrong = []
    for body in bodies:
        r = await client.post("/v1/endpoints", json={"url": HOOK, **body})
        got = r.json()
        if (r.status_code, got.get("code"), got.get("field")) != (422, "VALIDATION_FAILED", field):
            wrong.append((body, r.status_code, got.get("field")))
        else:
            assert_error(r, 422, "VALIDATION_FAILED", field)
    return wrong


async def test_an_unknown_dialect_or_format_is_refused(client: httpx.AsyncClient) -> None:
    dialects = [{"dialect": d} for d in ("Standard", "hmac", "", "ed448", "HMAC-HEX")]
    formats = [{"format": f} for f in ("flat", "Envelope", "", "json")]
    assert await refusals(client, dialects, "dialect") == []
    assert await refusals(client, formats, "format") == []
    assert await list_all(client, "/v1/endpoints") == []


async def test_a_header_prefix_that_makes_no_valid_header_name_is_refused(
    client: httpx.AsyncClient,
) -> None:
    prefixes: list[Any] = ["", "-Example", "Example-", "Ex_ample", "Ex ample", "Ex:ample"]
    prefixes += ["E" * 33, "Ex\u00e4mple", 7]
    bodies = [{"dialect": "hmac-hex", "header_prefix": p} for p in prefixes]
    assert await refusals(client, bodies, "header_prefix") == []
    assert await list_all(client, "/v1/endpoints") == []


async def test_a_header_prefix_with_a_trailing_line_break_is_refused(
    client: httpx.AsyncClient,
) -> None:
    # "X-Example\n-Signature" is no header name. The prefix rule is a regex anchored with
    # "$", which also matches just before a final line break.
    bodies = [{"dialect": "hmac-hex", "header_prefix": "Example\n"}]
    assert await refusals(client, bodies, "header_prefix") == []


async def test_a_header_prefix_of_1_to_32_letters_digits_and_inner_dashes_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    for prefix in ["E", "Example", "My-Example-2", "9x", "E" * 32]:
        ep = await create_endpoint(client, HOOK, dialect="hmac-hex", header_prefix=prefix)
        assert ep["header_prefix"] == prefix


async def test_a_secret_of_the_wrong_kind_for_the_dialect_is_refused_without_repeating_it(
    client: httpx.AsyncClient,
) -> None:
    cases = [
        ("standard", whsk(bytes(32))),
        ("standard", "a-plain-token-of-32-characters!!"),
        ("ed25519", whsec(32)),
        ("ed25519", whsk(bytes(31))),
        ("ed25519", whsk(bytes(33))),
        ("ed25519", "whpk_" + base64.b64encode(bytes(32)).decode()),
        ("hmac-hex", "short-secret"),
        ("hmac-hex", "has a space in the middle"),
        ("hmac-hex", "x" * 513),
        ("bearer", "tiny"),
        ("bearer", "bearer key with spaces"),
        ("bearer", "caf\u00e9-0123456789abcdef"),
    ]
    bodies = [{"dialect": dialect, "secret": secret} for dialect, secret in cases]
    assert await refusals(client, bodies, "secret") == []
    for body in bodies:
        r = await client.post("/v1/endpoints", json={"url": HOOK, **body})
        assert body["secret"] not in r.json()["message"], body
    assert await list_all(client, "/v1/endpoints") == []


async def test_a_token_secret_with_a_trailing_line_break_is_refused(
    client: httpx.AsyncClient,
) -> None:
    # hmac-hex and bearer take "16 to 512 visible ASCII characters without spaces"; a line
    # feed is none of those. Accepted, it could never be sent: the sender refuses a header
    # with a line break in it, so every delivery of the endpoint would fail.
    secret = "tail-line-break-0123456789\n"
    bodies = [{"dialect": dialect, "secret": secret} for dialect in ("hmac-hex", "bearer")]
    assert await refusals(client, bodies, "secret") == []


async def test_a_header_the_dialect_sets_cannot_be_an_endpoint_header(
    client: httpx.AsyncClient,
) -> None:
    cases = [
        ("bearer", "Croupier", "Authorization"),
        ("bearer", "Croupier", "authorization"),
        ("hmac-hex", "Croupier", "X-Croupier-Signature"),
        ("hmac-hex", "Croupier", "x-croupier-timestamp"),
        ("hmac-hex", "Example", "X-Example-Signature"),
        ("hmac-hex", "Example", "X-EXAMPLE-TIMESTAMP"),
        ("standard", "Croupier", "Webhook-Signature"),
        ("ed25519", "Croupier", "webhook-timestamp"),
        ("hmac-hex", "Example", "webhook-id"),
        ("bearer", "Croupier", "Webhook-Id"),
    ]
    bodies = [
        {"dialect": dialect, "header_prefix": prefix, "headers": {header: "x"}}
        for dialect, prefix, header in cases
    ]
    assert await refusals(client, bodies, "headers") == []
    assert await list_all(client, "/v1/endpoints") == []


async def test_an_endpoint_header_name_with_a_trailing_line_break_is_refused(
    client: httpx.AsyncClient,
) -> None:
    # Same "$"-anchored pattern as the prefix: "X-Brand\n" passes the header-name check, and
    # every delivery then fails ("invalid header: CR or LF in a request header").
    for dialect in ("standard", "bearer"):
        bodies = [{"dialect": dialect, "headers": {"X-Brand\n": "7"}}]
        assert await refusals(client, bodies, "headers") == []


async def test_a_header_another_dialect_would_set_is_an_ordinary_endpoint_header(
    client: httpx.AsyncClient,
) -> None:
    for dialect, prefix, header in [
        ("standard", "Croupier", "Authorization"),
        ("ed25519", "Croupier", "X-Croupier-Signature"),
        ("hmac-hex", "Example", "X-Croupier-Signature"),
        ("hmac-hex", "Croupier", "Authorization"),
    ]:
        ep = await create_endpoint(
            client, HOOK, dialect=dialect, header_prefix=prefix, headers={header: "x"}
        )
        assert ep["headers"] == {header: "x"}


async def test_the_secret_is_in_the_create_answer_only(client: httpx.AsyncClient) -> None:
    for dialect in ("standard", "ed25519", "hmac-hex", "bearer"):
        ep = await create_endpoint(client, HOOK, dialect=dialect)
        secret = ep["secret"]
        fetched = await get_json(client, f"/v1/endpoints/{ep['id']}")
        listed = await list_all(client, "/v1/endpoints")
        patched = await client.patch(f"/v1/endpoints/{ep['id']}", json={"description": "x"})
        assert patched.status_code == 200, patched.text
        same = await client.patch(f"/v1/endpoints/{ep['id']}", json={"dialect": dialect})
        assert same.status_code == 200, same.text
        for shown in (fetched, *listed, patched.json(), same.json()):
            assert "secret" not in shown, (dialect, shown)
            assert secret not in orjson.dumps(shown).decode(), dialect
        assert fetched["dialect"] == dialect


# -- changing the dialect -------------------------------------------------------------------


async def test_a_dialect_the_secret_cannot_sign_in_gets_a_new_secret_shown_once(
    client: httpx.AsyncClient, container: Container, receiver: Receiver, clock: ManualClock
) -> None:
    # Also where the old secret would pass the new dialect's rules: a signing secret must
    # not become a bearer key (sent in the clear), nor an ed25519 private key a shared one.
    cases: list[tuple[str, Dialect, str]] = [
        ("standard", "ed25519", "whsk_"),
        ("ed25519", "standard", "whsec_"),
        ("bearer", "standard", "whsec_"),
        ("bearer", "ed25519", "whsk_"),
        ("hmac-hex", "ed25519", "whsk_"),
        ("standard", "bearer", ""),
        ("hmac-hex", "bearer", ""),
        ("ed25519", "hmac-hex", "whsec_"),
        ("ed25519", "bearer", ""),
        ("bearer", "hmac-hex", "whsec_"),
    ]
    keys: dict[str, tuple[Dialect, str]] = {}
    for n, (before, after, prefix_of_new) in enumerate(cases):
        path = f"/{n}-{before}-to-{after}"
        ep = await create_endpoint(client, receiver.url(path), dialect=before)
        r = await client.patch(f"/v1/endpoints/{ep['id']}", json={"dialect": after})
        assert r.status_code == 200, r.text
        changed = r.json()
        assert changed["dialect"] == after
        new = changed["secret"]
        assert new.startswith(prefix_of_new) and new != ep["secret"], path
        shown = await endpoint_secret(client, ep["id"])
        assert shown["secret"] == new
        assert "previous_secret" not in shown, "the old secret cannot sign in the new dialect"
        assert "secret" not in await get_json(client, f"/v1/endpoints/{ep['id']}")
        keys[path] = (after, shown["public_key"] if after == "ed25519" else new)
    await publish(client)
    await container.dispatcher.run_until_idle()
    for path, (dialect, key) in keys.items():
        [req] = receiver.at(path)
        verifier(clock, dialect, key).verify(req.headers, req.body)


async def test_a_dialect_the_secret_can_sign_in_keeps_it_and_the_answer_does_not_show_it(
    client: httpx.AsyncClient, container: Container, receiver: Receiver, clock: ManualClock
) -> None:
    # hmac-hex generates whsec_ secrets: they sign in the standard dialect as they are, and
    # a whsec_ secret is visible ASCII, which hmac-hex takes. Only between the two HMAC
    # dialects does a secret carry over.
    cases: list[tuple[str, Dialect]] = [
        ("standard", "hmac-hex"),
        ("hmac-hex", "standard"),
    ]
    keys: dict[str, tuple[Dialect, str]] = {}
    for n, (before, after) in enumerate(cases):
        path = f"/{n}-{before}-to-{after}"
        ep = await create_endpoint(client, receiver.url(path), dialect=before)
        r = await client.patch(f"/v1/endpoints/{ep['id']}", json={"dialect": after})
        assert r.status_code == 200, r.text
        assert "secret" not in r.json(), path
        assert (await endpoint_secret(client, ep["id"]))["secret"] == ep["secret"]
        keys[path] = (after, ep["secret"])
    await publish(client)
    await container.dispatcher.run_until_idle()
    for path, (dialect, key) in keys.items():
        [req] = receiver.at(path)
        verifier(clock, dialect, key).verify(req.headers, req.body)


async def test_a_dialect_change_with_a_secret_of_the_new_kind_uses_that_secret(
    client: httpx.AsyncClient, container: Container, receiver: Receiver, clock: ManualClock
) -> None:
    ep = await create_endpoint(client, receiver.url())
    seed = bytes(range(100, 132))
    r = await client.patch(
        f"/v1/endpoints/{ep['id']}", json={"dialect": "ed25519", "secret": whsk(seed)}
    )
    assert r.status_code == 200, r.text
    assert "secret" not in r.json(), "the caller chose it: nothing new to show"
    _, req = await deliver_one(client, container, receiver)
    verifier(clock, "ed25519", whpk_of(seed)).verify(req.headers, req.body)


async def test_a_dialect_change_with_a_secret_of_the_old_kind_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    ep = await create_endpoint(client, HOOK)
    before = await get_json(client, f"/v1/endpoints/{ep['id']}")
    r = await client.patch(
        f"/v1/endpoints/{ep['id']}", json={"dialect": "ed25519", "secret": whsec(24)}
    )
    assert_error(r, 422, "VALIDATION_FAILED", "secret")
    assert await get_json(client, f"/v1/endpoints/{ep['id']}") == before
    assert (await endpoint_secret(client, ep["id"]))["secret"] == ep["secret"]


async def test_a_change_that_makes_a_header_clash_with_the_dialect_is_refused(
    client: httpx.AsyncClient,
) -> None:
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"headers": {"Authorization": "Basic abc"}}, {"dialect": "bearer"}),
        (
            {"headers": {"X-Example-Signature": "x"}, "dialect": "hmac-hex"},
            {"header_prefix": "Example"},
        ),
        ({"headers": {"X-Croupier-Timestamp": "x"}}, {"dialect": "hmac-hex"}),
        ({"dialect": "bearer"}, {"headers": {"Authorization": "Bearer other"}}),
    ]
    for created, change in cases:
        ep = await create_endpoint(client, HOOK, **created)
        before = await get_json(client, f"/v1/endpoints/{ep['id']}")
        r = await client.patch(f"/v1/endpoints/{ep['id']}", json=change)
        assert_error(r, 422, "VALIDATION_FAILED", "headers")
        assert await get_json(client, f"/v1/endpoints/{ep['id']}") == before, change


async def test_patch_refuses_an_unknown_dialect_format_or_prefix_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    ep = await create_endpoint(client, HOOK, dialect="hmac-hex")
    before = await get_json(client, f"/v1/endpoints/{ep['id']}")
    for change, field in [
        ({"dialect": "ed448"}, "dialect"),
        ({"format": "xml"}, "format"),
        ({"header_prefix": "Bad Prefix"}, "header_prefix"),
        ({"header_prefix": None}, "header_prefix"),
        ({"format": None}, "format"),
        ({"dialect": None}, "dialect"),
    ]:
        r = await client.patch(f"/v1/endpoints/{ep['id']}", json=change)
        assert_error(r, 422, "VALIDATION_FAILED", field)
        assert await get_json(client, f"/v1/endpoints/{ep['id']}") == before, change


async def test_a_new_header_prefix_names_the_headers_of_the_next_delivery(
    client: httpx.AsyncClient, container: Container, receiver: Receiver, clock: ManualClock
) -> None:
    ep = await create_endpoint(client, receiver.url(), dialect="hmac-hex")
    r = await client.patch(f"/v1/endpoints/{ep['id']}", json={"header_prefix": "Example"})
    assert r.status_code == 200, r.text
    assert r.json()["header_prefix"] == "Example"
    _, req = await deliver_one(client, container, receiver)
    assert "x-croupier-signature" not in req.headers
    verifier(clock, "hmac-hex", ep["secret"], header_prefix="Example").verify(req.headers, req.body)
