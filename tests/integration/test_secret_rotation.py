"""Rotating an endpoint's secret: both secrets sign through the grace window, then the new
one alone; what ``GET /v1/endpoints/{id}/secret`` shows meanwhile; and the rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import httpx
import pytest

from croupier.bootstrap import Container
from croupier.domain.clock import ManualClock
from croupier.receiver import SignatureError, Verifier
from croupier.receiver.verify import Dialect
from tests.integration.conftest import (
    TenantFactory,
    assert_error,
    create_endpoint,
    get_json,
    iso,
    publish,
)
from tests.support.receiver import Received, Receiver

#: An IP literal (the tests allow loopback): creating it asks no DNS server.
HOOK = "http://127.0.0.1:9/croupier"
DAY = 86_400
MAX_GRACE = 30 * DAY


def whsec(fill: bytes, n_bytes: int = 24) -> str:
    return "whsec_" + base64.b64encode(fill * n_bytes).decode()


def verifier(
    clock: ManualClock, dialect: Dialect, key: str, *, header_prefix: str = "Croupier"
) -> Verifier:
    """A receiver that knows one key, with the test's clock as its "now"."""
    return Verifier(dialect, key, header_prefix=header_prefix, now=lambda: clock.now_ms() / 1000)


async def rotate(
    client: httpx.AsyncClient, endpoint_id: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    r = await client.post(f"/v1/endpoints/{endpoint_id}/rotate-secret", json=body)
    assert r.status_code == 200, r.text
    rotated: dict[str, Any] = r.json()
    return rotated


async def secret_of(client: httpx.AsyncClient, endpoint_id: str) -> dict[str, Any]:
    return await get_json(client, f"/v1/endpoints/{endpoint_id}/secret")


async def deliver(client: httpx.AsyncClient, container: Container, receiver: Receiver) -> Received:
    """Publish one event, deliver it, and return the request that arrived."""
    before = len(receiver.requests)
    await publish(client)
    await container.dispatcher.run_until_idle()
    [request] = receiver.requests[before:]
    return request


def accepted_by(
    clock: ManualClock, dialect: Dialect, keys: list[str], req: Received, **options: str
) -> list[bool]:
    """For each key: does a receiver that knows only that key accept the request?"""
    verdicts = []
    for key in keys:
        try:
            verifier(clock, dialect, key, **options).verify(req.headers, req.body)
        except SignatureError:
            verdicts.append(False)
        else:
            verdicts.append(True)
    return verdicts


def standard_signature(secret: str, req: Received) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{req.headers['webhook-id']}.{req.headers['webhook-timestamp']}.".encode() + req.body
    return "v1," + base64.b64encode(hmac.digest(key, signed, "sha256")).decode()


# -- the rotation itself ----------------------------------------------------------------------


async def test_a_rotation_answers_with_the_endpoint_and_its_new_secret(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    ep = await create_endpoint(client, HOOK)
    rotated = await rotate(client, ep["id"])
    assert rotated["id"] == ep["id"]
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != ep["secret"]
    assert rotated["previous_secret_expires_at"] == iso(clock, DAY)
    fetched = await get_json(client, f"/v1/endpoints/{ep['id']}")
    assert "secret" not in fetched
    assert fetched["previous_secret_expires_at"] == iso(clock, DAY)
    assert await secret_of(client, ep["id"]) == {
        "secret": rotated["secret"],
        "previous_secret": ep["secret"],
        "previous_secret_expires_at": iso(clock, DAY),
    }


async def test_a_rotation_without_a_body_or_with_an_empty_one_uses_the_defaults(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    ep = await create_endpoint(client, HOOK)
    r = await client.post(f"/v1/endpoints/{ep['id']}/rotate-secret")
    assert r.status_code == 200, r.text
    assert r.json()["previous_secret_expires_at"] == iso(clock, DAY)
    other = await create_endpoint(client, HOOK)
    assert (await rotate(client, other["id"], {}))["previous_secret_expires_at"] == iso(clock, DAY)


async def test_a_rotation_to_a_given_secret_uses_it(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    ep = await create_endpoint(client, receiver.url())
    chosen = whsec(b"c", 32)
    rotated = await rotate(client, ep["id"], {"secret": chosen, "grace_seconds": 60})
    assert rotated["secret"] == chosen
    req = await deliver(client, container, receiver)
    assert req.headers["webhook-signature"] == (
        f"{standard_signature(chosen, req)} {standard_signature(ep['secret'], req)}"
    )


# -- signing through the window, per dialect ------------------------------------------------------


async def test_during_the_window_a_standard_delivery_carries_both_signatures_then_the_new_alone(
    client: httpx.AsyncClient, container: Container, receiver: Receiver, clock: ManualClock
) -> None:
    ep = await create_endpoint(client, receiver.url())
    old = ep["secret"]
    new = (await rotate(client, ep["id"], {"grace_seconds": 3600}))["secret"]
    during = await deliver(client, container, receiver)
    # newest first, separated by a space, each computed here by hand
    assert during.headers["webhook-signature"] == (
        f"{standard_signature(new, during)} {standard_signature(old, during)}"
    )
    assert accepted_by(clock, "standard", [old, new], during) == [True, True]
    # the courier has learnt this endpoint version with both secrets; past the window it
    # must still stop signing with the old one
    clock.advance(3600)
    after = await deliver(client, container, receiver)
    assert after.headers["webhook-signature"] == standard_signature(new, after)
    assert accepted_by(clock, "standard", [old, new], after) == [False, True]
    assert await secret_of(client, ep["id"]) == {"secret": new}


async def test_the_old_secret_signs_until_the_last_millisecond_of_the_window(
    client: httpx.AsyncClient, container: Container, receiver: Receiver, clock: ManualClock
) -> None:
    ep = await create_endpoint(client, receiver.url())
    await rotate(client, ep["id"], {"grace_seconds": 10})
    clock.advance(9.999)
    last = await deliver(client, container, receiver)
    assert len(last.headers["webhook-signature"].split(" ")) == 2
    assert "previous_secret" in await secret_of(client, ep["id"])
    clock.advance(0.001)
    first_after = await deliver(client, container, receiver)
    assert len(first_after.headers["webhook-signature"].split(" ")) == 1
    assert "previous_secret" not in await secret_of(client, ep["id"])


async def test_during_the_window_an_ed25519_delivery_carries_two_v1a_signatures(
    client: httpx.AsyncClient, container: Container, receiver: Receiver, clock: ManualClock
) -> None:
    ep = await create_endpoint(client, receiver.url(), dialect="ed25519")
    old_public = (await secret_of(client, ep["id"]))["public_key"]
    rotated = await rotate(client, ep["id"])
    assert rotated["secret"].startswith("whsk_")
    shown = await secret_of(client, ep["id"])
    assert shown == {
        "secret": rotated["secret"],
        "public_key": shown["public_key"],
        "previous_secret": ep["secret"],
        "previous_public_key": old_public,
        "previous_secret_expires_at": iso(clock, DAY),
    }
    assert shown["public_key"] != old_public
    during = await deliver(client, container, receiver)
    entries = during.headers["webhook-signature"].split(" ")
    assert [e.split(",")[0] for e in entries] == ["v1a", "v1a"]
    keys = [old_public, shown["public_key"]]
    assert accepted_by(clock, "ed25519", keys, during) == [True, True]
    clock.advance(DAY)
    after = await deliver(client, container, receiver)
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert accepted_by(clock, "ed25519", keys, after) == [False, True]
    assert set(await secret_of(client, ep["id"])) == {"secret", "public_key"}


async def test_during_the_window_an_hmac_hex_delivery_carries_two_comma_separated_signatures(
    client: httpx.AsyncClient, container: Container, receiver: Receiver, clock: ManualClock
) -> None:
    old = "old-shared-secret-0123456789"
    new = "new-shared-secret-0123456789"
    ep = await create_endpoint(
        client, receiver.url(), dialect="hmac-hex", header_prefix="Example", secret=old
    )
    await rotate(client, ep["id"], {"secret": new, "grace_seconds": 600})
    during = await deliver(client, container, receiver)
    signed = f"{during.headers['x-example-timestamp']}.".encode() + during.body
    by_hand = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in (new, old)]
    assert during.headers["x-example-signature"] == f"sha256={by_hand[0]},sha256={by_hand[1]}"
    options = {"header_prefix": "Example"}
    assert accepted_by(clock, "hmac-hex", [old, new], during, **options) == [True, True]
    clock.advance(601)
    after = await deliver(client, container, receiver)
    assert after.headers["x-example-signature"].count("sha256=") == 1
    assert accepted_by(clock, "hmac-hex", [old, new], after, **options) == [False, True]


async def test_a_bearer_endpoint_sends_the_new_key_alone_at_once(
    client: httpx.AsyncClient, container: Container, receiver: Receiver, clock: ManualClock
) -> None:
    ep = await create_endpoint(client, receiver.url(), dialect="bearer")
    rotated = await rotate(client, ep["id"])
    new = rotated["secret"]
    assert new != ep["secret"]
    req = await deliver(client, container, receiver)
    assert req.headers["authorization"] == f"Bearer {new}"
    assert accepted_by(clock, "bearer", [ep["secret"], new], req) == [False, True]
    # the old key is still shown while its window lasts, for the record
    assert (await secret_of(client, ep["id"]))["previous_secret"] == ep["secret"]


async def test_a_rotation_with_no_grace_stops_the_old_secret_at_once(
    client: httpx.AsyncClient, container: Container, receiver: Receiver, clock: ManualClock
) -> None:
    ep = await create_endpoint(client, receiver.url())
    rotated = await rotate(client, ep["id"], {"grace_seconds": 0})
    assert rotated["previous_secret_expires_at"] is None
    assert await secret_of(client, ep["id"]) == {"secret": rotated["secret"]}
    req = await deliver(client, container, receiver)
    assert req.headers["webhook-signature"] == standard_signature(rotated["secret"], req)
    assert accepted_by(clock, "standard", [ep["secret"], rotated["secret"]], req) == [False, True]


async def test_a_second_rotation_within_the_window_retires_the_oldest_secret(
    client: httpx.AsyncClient, container: Container, receiver: Receiver, clock: ManualClock
) -> None:
    ep = await create_endpoint(client, receiver.url())
    first = ep["secret"]
    second = (await rotate(client, ep["id"]))["secret"]
    clock.advance(60)
    third = (await rotate(client, ep["id"], {"grace_seconds": 120}))["secret"]
    assert await secret_of(client, ep["id"]) == {
        "secret": third,
        "previous_secret": second,
        "previous_secret_expires_at": iso(clock, 120),
    }
    req = await deliver(client, container, receiver)
    assert req.headers["webhook-signature"] == (
        f"{standard_signature(third, req)} {standard_signature(second, req)}"
    )
    assert accepted_by(clock, "standard", [first, second, third], req) == [False, True, True]


async def test_setting_a_secret_with_patch_ends_a_rotations_window(
    client: httpx.AsyncClient, container: Container, receiver: Receiver, clock: ManualClock
) -> None:
    ep = await create_endpoint(client, receiver.url())
    await rotate(client, ep["id"])
    chosen = whsec(b"p")
    r = await client.patch(f"/v1/endpoints/{ep['id']}", json={"secret": chosen})
    assert r.status_code == 200, r.text
    assert r.json()["previous_secret_expires_at"] is None
    assert await secret_of(client, ep["id"]) == {"secret": chosen}
    req = await deliver(client, container, receiver)
    assert req.headers["webhook-signature"] == standard_signature(chosen, req)


# -- the rules ----------------------------------------------------------------------------------


async def test_a_grace_period_outside_0_to_30_days_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    ep = await create_endpoint(client, HOOK)
    for grace in [-1, MAX_GRACE + 1, 10**12, "60", 1.5, True, None]:
        r = await client.post(
            f"/v1/endpoints/{ep['id']}/rotate-secret", json={"grace_seconds": grace}
        )
        assert_error(r, 422, "VALIDATION_FAILED", "grace_seconds")
    assert await secret_of(client, ep["id"]) == {"secret": ep["secret"]}


async def test_the_longest_grace_period_is_30_days(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    ep = await create_endpoint(client, HOOK)
    rotated = await rotate(client, ep["id"], {"grace_seconds": MAX_GRACE})
    assert rotated["previous_secret_expires_at"] == iso(clock, MAX_GRACE)


@pytest.mark.parametrize(
    ("dialect", "wrong"),
    [
        ("standard", "whsk_" + base64.b64encode(bytes(32)).decode()),
        ("standard", whsec(b"s", 8)),
        ("ed25519", whsec(b"e", 32)),
        ("hmac-hex", "too-short"),
        ("bearer", "has spaces in the key"),
    ],
)
async def test_a_given_secret_of_the_wrong_kind_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, dialect: str, wrong: str
) -> None:
    ep = await create_endpoint(client, HOOK, dialect=dialect)
    r = await client.post(f"/v1/endpoints/{ep['id']}/rotate-secret", json={"secret": wrong})
    body = assert_error(r, 422, "VALIDATION_FAILED", "secret")
    assert wrong not in body["message"]
    assert (await secret_of(client, ep["id"]))["secret"] == ep["secret"]


async def test_a_given_secret_equal_to_the_current_one_is_refused(
    client: httpx.AsyncClient,
) -> None:
    ep = await create_endpoint(client, HOOK)
    r = await client.post(f"/v1/endpoints/{ep['id']}/rotate-secret", json={"secret": ep["secret"]})
    assert_error(r, 422, "VALIDATION_FAILED", "secret")
    assert await secret_of(client, ep["id"]) == {"secret": ep["secret"]}


async def test_rotation_refuses_a_field_it_does_not_know(client: httpx.AsyncClient) -> None:
    ep = await create_endpoint(client, HOOK)
    r = await client.post(f"/v1/endpoints/{ep['id']}/rotate-secret", json={"grace": 60})
    assert_error(r, 422, "VALIDATION_FAILED", "grace")


async def test_rotating_or_reading_the_secret_of_an_endpoint_that_does_not_exist_is_404(
    client: httpx.AsyncClient,
) -> None:
    missing = "ep_01HZZZZZZZZZZZZZZZZZZZZZZZ"
    assert_error(await client.post(f"/v1/endpoints/{missing}/rotate-secret"), 404, "NOT_FOUND")
    assert_error(await client.get(f"/v1/endpoints/{missing}/secret"), 404, "NOT_FOUND")


async def test_another_tenant_can_neither_read_nor_rotate_the_secret(
    client: httpx.AsyncClient, new_tenant: TenantFactory
) -> None:
    ep = await create_endpoint(client, HOOK)
    other = await new_tenant("other-operator")
    r = await other.http.get(f"/v1/endpoints/{ep['id']}/secret")
    assert_error(r, 404, "NOT_FOUND")
    assert ep["secret"] not in r.text
    assert_error(await other.http.post(f"/v1/endpoints/{ep['id']}/rotate-secret"), 404, "NOT_FOUND")
    given = whsec(b"o")
    r = await other.http.post(f"/v1/endpoints/{ep['id']}/rotate-secret", json={"secret": given})
    assert_error(r, 404, "NOT_FOUND")
    assert await secret_of(client, ep["id"]) == {"secret": ep["secret"]}
    # and the other tenant's own endpoint answers it as usual
    own = await create_endpoint(other.http, HOOK)
    assert (await secret_of(other.http, own["id"]))["secret"] == own["secret"]
    assert_error(await client.get(f"/v1/endpoints/{own['id']}/secret"), 404, "NOT_FOUND")
