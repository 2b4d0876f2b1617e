"""The SSRF guard seen from the API: endpoint URLs that point inside the operator's network
are refused when they are created or changed, unless the operator allows them; and a
sender refuses to connect to such an address whatever the endpoint's URL said before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from croupier.api.rest.app import create_app
from croupier.bootstrap import Container, build
from croupier.config import Settings
from croupier.dispatch.dispatcher import Dispatcher, DispatcherConfig
from croupier.domain.clock import ManualClock
from croupier.domain.network import AddressPolicy
from tests.conftest import ADMIN_KEY
from tests.integration.conftest import assert_error, create_endpoint, get_json, list_all, publish
from tests.support.receiver import Receiver

#: A globally routable IPv4 literal: accepted, and never connected to by these tests.
PUBLIC = "http://93.184.215.14/hook"
HINT = "CROUPIER_ALLOW_NETWORKS"

#: URL, then what the refusal must name: the address it means and why it is refused.
REFUSED: list[tuple[str, tuple[str, ...]]] = [
    ("http://127.0.0.1/hook", ("127.0.0.1", "loopback")),
    ("http://127.0.0.1:8080/hook", ("127.0.0.1", "loopback")),
    ("http://localhost:8080/hook", ("localhost", "loopback")),
    ("http://169.254.169.254/latest/meta-data/", ("169.254.169.254", "link-local")),
    ("http://10.0.0.1/hook", ("10.0.0.1", "private")),
    ("http://192.168.1.20/hook", ("192.168.1.20", "private")),
    ("http://100.64.0.1/hook", ("100.64.0.1", "carrier-grade NAT")),
    ("http://0.0.0.0/hook", ("0.0.0.0", "unspecified")),
    ("http://[::1]/hook", ("::1", "loopback")),
    ("http://[::ffff:127.0.0.1]/hook", ("::ffff:127.0.0.1", "127.0.0.1", "loopback")),
    ("http://[::ffff:10.0.0.1]:8443/hook", ("10.0.0.1", "private")),
    ("http://[fd00::1]/hook", ("fd00::1", "private")),
    ("http://2130706433/hook", ("2130706433", "127.0.0.1", "loopback")),
    ("http://0x7f000001/hook", ("0x7f000001", "127.0.0.1", "loopback")),
    ("http://127.1/hook", ("127.0.0.1", "loopback")),
]


def strict(settings: Settings, **changes: Any) -> Settings:
    """The test settings without loopback allowed (the operator's default), plus changes."""
    return Settings(**{**settings.model_dump(), "allow_loopback": False, **changes})


class Strict:
    """``await strict_client(**settings_changes)``: an API on its own container whose SSRF
    guard is the operator's default (or as changed), on the test's database."""

    def __init__(self, settings: Settings, clock: ManualClock) -> None:
        self._settings = settings
        self._clock = clock
        self._opened: list[tuple[Container, httpx.AsyncClient]] = []

    async def __call__(self, **changes: Any) -> httpx.AsyncClient:
        assert not self._opened, "one container at a time holds the SQLite file"
        container = await build(
            strict(self._settings, **changes), clock=self._clock, auto_migrate=True
        )
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(container)),
            base_url="http://croupier.test",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        self._opened.append((container, client))
        return client

    async def close(self) -> None:
        for container, client in self._opened:
            await client.aclose()
            await container.close()


@pytest.fixture
async def strict_client(settings: Settings, clock: ManualClock) -> AsyncIterator[Strict]:
    factory = Strict(settings, clock)
    yield factory
    await factory.close()


async def misjudged(client: httpx.AsyncClient, method: str, path: str) -> list[str]:
    """The refused URLs that ``method path`` did not refuse as it should, with why."""
    wrong = []
    for url, named in REFUSED:
        r = await client.request(method, path, json={"url": url})
        body = r.json()
        if (r.status_code, body.get("code"), body.get("field")) != (422, "INVALID_URL", "url"):
            wrong.append(f"{url}: {r.status_code} {body}")
            continue
        assert_error(r, 422, "INVALID_URL", "url")
        missing = [word for word in (*named, HINT) if word not in body["message"]]
        if missing:
            wrong.append(f"{url}: {body['message']!r} does not name {missing}")
    return wrong


# -- at the API ---------------------------------------------------------------------------------


async def test_an_endpoint_url_on_an_internal_address_is_refused_naming_address_and_reason(
    strict_client: Strict,
) -> None:
    client = await strict_client()
    assert await misjudged(client, "POST", "/v1/endpoints") == []
    assert await list_all(client, "/v1/endpoints") == []


async def test_changing_an_endpoint_url_to_an_internal_address_is_refused_and_changes_nothing(
    strict_client: Strict,
) -> None:
    client = await strict_client()
    ep = await create_endpoint(client, PUBLIC)
    before = await get_json(client, f"/v1/endpoints/{ep['id']}")
    assert await misjudged(client, "PATCH", f"/v1/endpoints/{ep['id']}") == []
    assert await get_json(client, f"/v1/endpoints/{ep['id']}") == before


@pytest.mark.parametrize(
    "url",
    [
        PUBLIC,
        "https://93.184.215.14:8443/webhooks?brand=7",
        # a name that does not resolve (yet) is judged when a sender connects
        "http://no-such-host.invalid/hook",
    ],
)
async def test_a_public_address_or_a_name_that_does_not_resolve_is_accepted(
    strict_client: Strict, url: str
) -> None:
    client = await strict_client()
    assert (await create_endpoint(client, url))["url"] == url


async def test_networks_the_operator_allows_are_accepted_and_no_others(
    strict_client: Strict,
) -> None:
    client = await strict_client(allow_networks="10.0.0.0/8, 192.168.7.0/24")
    for url in ["http://10.1.2.3/x", "http://10.255.0.1:8080/x", "http://192.168.7.9/x"]:
        assert (await create_endpoint(client, url))["url"] == url
    for url, reason in [
        ("http://192.168.8.1/x", "private"),
        ("http://172.16.0.1/x", "private"),
        ("http://127.0.0.1/x", "loopback"),
        ("http://169.254.169.254/x", "link-local"),
    ]:
        r = await client.post("/v1/endpoints", json={"url": url})
        assert reason in assert_error(r, 422, "INVALID_URL", "url")["message"], url


async def test_allowing_loopback_allows_this_machine_and_no_other_internal_address(
    client: httpx.AsyncClient,
) -> None:
    # The shared test settings allow loopback, as `croupier serve --dev` does.
    for url in ["http://127.0.0.1:8080/x", "http://localhost:8080/x", "http://[::1]:8080/x"]:
        assert (await create_endpoint(client, url))["url"] == url
    for url in ["http://10.0.0.1/x", "http://169.254.169.254/x", "http://[fd00::1]/x"]:
        r = await client.post("/v1/endpoints", json={"url": url})
        assert_error(r, 422, "INVALID_URL", "url")


# -- when a sender connects ---------------------------------------------------------------------


async def test_a_sender_refuses_to_connect_to_an_address_its_policy_forbids(
    client: httpx.AsyncClient, container: Container, receiver: Receiver, clock: ManualClock
) -> None:
    # Created while loopback was allowed (the shared test settings), then delivered by a
    # dispatcher with the operator's default policy: the address is judged again on connect.
    by_address = await create_endpoint(client, receiver.url("/by-address"), retry_schedule=[0])
    by_name = await create_endpoint(
        client, f"http://localhost:{receiver.port}/by-name", retry_schedule=[0]
    )
    await publish(client)
    dispatcher = Dispatcher(
        container.dispatcher.queue,
        clock=clock,
        config=DispatcherConfig(address_policy=AddressPolicy()),
    )
    try:
        assert await dispatcher.run_until_idle() == 2
    finally:
        await dispatcher.transport.close()
    assert receiver.requests == []
    expected = "connection failed: address not allowed: 127.0.0.1 is a loopback address"
    for ep in (by_address, by_name):
        [row] = (await get_json(client, "/v1/deliveries", endpoint_id=ep["id"]))["data"]
        assert (row["status"], row["last_error"]) == ("dead", expected)
        assert row["last_status_code"] is None
        detail = await get_json(client, f"/v1/deliveries/{row['id']}")
        [attempt] = detail["attempt_log"]
        assert attempt["status_code"] is None
    # the same deliveries go through once replayed to a dispatcher that allows loopback
    r = await client.post(f"/v1/endpoints/{by_address['id']}/replay", json={"status": "dead"})
    assert r.status_code == 202, r.text
    await container.dispatcher.run_until_idle()
    assert [req.path for req in receiver.requests] == ["/by-address"]


# -- the setting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("not-a-cidr", "not-a-cidr"),
        ("10.0.0.0/8, nonsense", "nonsense"),
        ("10.0.0.1/8", "host bits"),
        ("10.0.0.0/33", "10.0.0.0/33"),
    ],
)
def test_an_allow_networks_setting_that_is_not_networks_is_refused(value: str, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        Settings(allow_networks=value)


def test_the_allow_networks_setting_accepts_cidrs_and_addresses_separated_by_commas_or_spaces() -> (
    None
):
    settings = Settings(allow_networks="10.0.0.0/8, 192.168.1.5 fd00::/8")
    policy = settings.address_policy()
    assert policy.refusal("10.9.9.9") is None
    assert policy.refusal("192.168.1.5") is None
    assert policy.refusal("fd00::7") is None
    assert policy.refusal("192.168.1.6") == "192.168.1.6 is a private address"
    assert policy.refusal("127.0.0.1") == "127.0.0.1 is a loopback address"
