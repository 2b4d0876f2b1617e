"""The address policy: which addresses a webhook may be posted to, and why others are refused.

The odd spellings of IP literals go through the system resolver for real: they are parsed by
the C library and never reach the network.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from croupier.domain.network import (
    AddressPolicy,
    RefusedAddress,
    UnresolvableHost,
    check_host,
)

HINT = "croupier does not post to internal networks unless CROUPIER_ALLOW_NETWORKS allows them"


class FakeResolver:
    """Answers every name with the same addresses and records what it was asked."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Iterable[str]:
        self.asked.append((host, port))
        return self.addresses


# --------------------------------------------------------------------------- the default policy


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.255.255.254", "a loopback address"),
        ("10.0.0.1", "a private address"),
        ("10.255.255.255", "a private address"),
        ("172.16.0.1", "a private address"),
        ("172.31.255.254", "a private address"),
        ("192.168.1.1", "a private address"),
        ("169.254.169.254", "a link-local address (cloud metadata services live there)"),
        ("100.64.0.1", "a carrier-grade NAT address"),
        ("100.127.255.254", "a carrier-grade NAT address"),
        ("224.0.0.1", "a multicast address"),
        ("239.255.255.250", "a multicast address"),
        ("0.0.0.0", "an unspecified address"),
        ("0.1.2.3", "a reserved address"),
        ("240.0.0.1", "a reserved address"),
        ("255.255.255.255", "a broadcast address"),
        ("198.18.0.1", "a benchmarking address"),
        ("192.0.2.1", "a documentation address"),
        ("198.51.100.1", "a documentation address"),
        ("203.0.113.1", "a documentation address"),
        ("192.0.0.8", "a reserved address"),
    ],
)
def test_non_public_ipv4_addresses_are_refused_with_the_most_specific_reason(
    address: str, kind: str
) -> None:
    assert AddressPolicy().refusal(address) == f"{address} is {kind}"


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("::1", "a loopback address"),
        ("::", "an unspecified address"),
        ("fe80::1", "a link-local address"),
        ("fe80::1%eth0", "a link-local address"),
        ("fc00::1", "a private address"),
        ("fd12::1", "a private address"),
        ("ff02::1", "a multicast address"),
        ("ff0e::1", "a multicast address"),
        ("fec0::1", "a site-local address"),
        ("2001:db8::1", "a documentation address"),
        ("2001:2::1", "a benchmarking address"),
        ("64:ff9b:1::1", "a local-use NAT64 address"),
        ("100::1", "a discard-only address"),
        ("2001:10::1", "a reserved address"),
        ("5f00::1", "a reserved address"),
    ],
)
def test_non_public_ipv6_addresses_are_refused_with_the_most_specific_reason(
    address: str, kind: str
) -> None:
    assert AddressPolicy().refusal(address) == f"{address} is {kind}"


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.215.14",
        "2606:4700:4700::1111",
        "2a00:1450:4001:80b::200e",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert AddressPolicy().refusal(address) is None


def test_addresses_are_accepted_as_objects_and_with_brackets() -> None:
    policy = AddressPolicy()

    assert policy.refusal(IPv4Address("10.1.2.3")) == "10.1.2.3 is a private address"
    assert policy.refusal(IPv6Address("::1")) == "::1 is a loopback address"
    assert policy.refusal("[::1]") == "::1 is a loopback address"
    assert policy.refusal(IPv4Address("8.8.8.8")) is None


def test_something_that_is_not_an_address_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        AddressPolicy().refusal("localhost")


# --------------------------------------------------------------------------- IPv6 that carries IPv4


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1 maps 127.0.0.1, a loopback address"),
        ("::ffff:7f00:1", "::ffff:127.0.0.1 maps 127.0.0.1, a loopback address"),
        ("::ffff:10.0.0.1", "::ffff:10.0.0.1 maps 10.0.0.1, a private address"),
        (
            "::ffff:169.254.169.254",
            "::ffff:169.254.169.254 maps 169.254.169.254, "
            "a link-local address (cloud metadata services live there)",
        ),
        ("64:ff9b::7f00:1", "64:ff9b::7f00:1 embeds 127.0.0.1, a loopback address"),
        ("64:ff9b::a00:7", "64:ff9b::a00:7 embeds 10.0.0.7, a private address"),
        ("2002:7f00:1::", "2002:7f00:1:: embeds 127.0.0.1, a loopback address"),
        (
            "2002:a9fe:a9fe::1",
            "2002:a9fe:a9fe::1 embeds 169.254.169.254, "
            "a link-local address (cloud metadata services live there)",
        ),
        ("::7f00:1", "::7f00:1 embeds 127.0.0.1, a loopback address"),
        ("::808:808", "::808:808 is a deprecated IPv4-compatible address"),
        (
            # Teredo hides the client's address bit-flipped in the last 32 bits.
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            "2001:0:4136:e378:8000:63bf:80ff:fffe embeds 127.0.0.1, a loopback address",
        ),
        (
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7 is a Teredo tunnel address",
        ),
    ],
)
def test_ipv6_addresses_that_carry_an_ipv4_address_are_judged_by_it(
    address: str, reason: str
) -> None:
    assert AddressPolicy().refusal(address) == reason


# --------------------------------------------------------------------------- allowing more


def test_an_allowed_network_lets_its_addresses_through_and_no_others() -> None:
    policy = AddressPolicy.parse("10.0.0.0/8")

    assert policy.refusal("10.1.2.3") is None
    assert policy.refusal("192.168.1.1") == "192.168.1.1 is a private address"
    assert policy.refusal("127.0.0.1") == "127.0.0.1 is a loopback address"


def test_an_allowed_ipv4_network_also_allows_the_ipv6_forms_that_lead_to_it() -> None:
    policy = AddressPolicy.parse("10.0.0.0/8")

    assert policy.refusal("::ffff:10.1.2.3") is None
    assert policy.refusal("64:ff9b::a01:203") is None
    assert policy.refusal("::ffff:192.168.1.1") is not None


def test_an_allowed_ipv4_mapped_network_is_read_as_the_ipv4_network() -> None:
    policy = AddressPolicy.parse("::ffff:10.0.0.0/104")

    assert policy.allow == (IPv4Network("10.0.0.0/8"),)
    assert policy.refusal("10.9.9.9") is None
    assert policy.refusal("::ffff:10.9.9.9") is None


def test_an_allowed_ipv6_network_and_a_single_address_are_honoured() -> None:
    policy = AddressPolicy.parse("fd00::/8, 192.168.1.5")

    assert policy.refusal("fd12::1") is None
    assert policy.refusal("fc00::1") == "fc00::1 is a private address"
    assert policy.refusal("192.168.1.5") is None
    assert policy.refusal("192.168.1.6") == "192.168.1.6 is a private address"


def test_an_allowed_link_local_network_covers_addresses_with_a_scope_id() -> None:
    assert AddressPolicy.parse("fe80::/10").refusal("fe80::1%eth0") is None


def test_allowing_loopback_allows_loopback_only() -> None:
    policy = AddressPolicy(allow_loopback=True)

    assert policy.refusal("127.0.0.1") is None
    assert policy.refusal("127.8.9.10") is None
    assert policy.refusal("::1") is None
    assert policy.refusal("::ffff:127.0.0.1") is None
    assert policy.refusal("10.0.0.1") == "10.0.0.1 is a private address"
    assert policy.refusal("169.254.169.254") is not None
    assert policy.refusal("0.0.0.0") == "0.0.0.0 is an unspecified address"


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "fe80::1", "::ffff:10.0.0.1", "8.8.8.8"],
)
def test_the_permissive_policy_allows_every_address(address: str) -> None:
    assert AddressPolicy.permissive().refusal(address) is None


# --------------------------------------------------------------------------- parsing


def test_parse_reads_commas_spaces_and_sequences_and_drops_repeats() -> None:
    policy = AddressPolicy.parse(
        ["10.0.0.0/8, 192.168.1.5  fd00::/8", "", "10.0.0.0/8,,"], allow_loopback=True
    )

    assert policy == AddressPolicy(
        allow=(
            IPv4Network("10.0.0.0/8"),
            IPv4Network("192.168.1.5/32"),
            IPv6Network("fd00::/8"),
        ),
        allow_loopback=True,
    )


def test_an_empty_allow_list_is_the_default_policy() -> None:
    assert AddressPolicy.parse("") == AddressPolicy()
    assert AddressPolicy.parse(" , ") == AddressPolicy()
    assert AddressPolicy.parse([]) == AddressPolicy()


@pytest.mark.parametrize(
    "policy",
    [
        AddressPolicy(),
        AddressPolicy.parse("10.0.0.0/8 192.168.1.5 fd00::/8", allow_loopback=True),
        AddressPolicy.permissive(),
    ],
)
def test_allow_spec_reads_back_as_the_same_policy(policy: AddressPolicy) -> None:
    assert AddressPolicy.parse(policy.allow_spec, allow_loopback=policy.allow_loopback) == policy


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("10.0.0.300", "'10.0.0.300' is neither an IP network"),
        ("10.0.0.0/8, intranet", "'intranet' is neither an IP network"),
        ("10.0.0.0/33", "'10.0.0.0/33' is neither an IP network"),
        ("10.0.0.0/8;192.168.0.0/16", "'10.0.0.0/8;192.168.0.0/16' is neither"),
        ("10.0.0.1/8", "'10.0.0.1/8' has host bits set: write 10.0.0.0/8"),
        ("fd00::1/8", "'fd00::1/8' has host bits set: write fd00::/8"),
    ],
)
def test_parse_names_the_entry_it_cannot_read(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        AddressPolicy.parse(text)


def test_a_policy_built_by_hand_must_hold_networks_not_text() -> None:
    with pytest.raises(TypeError, match=r"AddressPolicy\.parse"):
        AddressPolicy(allow=("10.0.0.0/8",))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- check_host


async def test_a_host_resolving_to_public_addresses_passes_with_its_addresses() -> None:
    resolve = FakeResolver("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")

    addresses = await check_host(AddressPolicy(), "receiver.example", 443, resolve=resolve)

    assert addresses == ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    assert resolve.asked == [("receiver.example", 443)]


async def test_a_host_with_any_internal_address_among_public_ones_is_refused() -> None:
    resolve = FakeResolver("93.184.215.14", "10.0.0.7", "1.1.1.1")

    with pytest.raises(RefusedAddress) as refused:
        await check_host(AddressPolicy(), "internal.example", 443, resolve=resolve)

    assert str(refused.value) == (
        f"url host 'internal.example' resolves to 10.0.0.7, a private address; {HINT}"
    )
    assert refused.value.host == "internal.example"
    assert refused.value.address == "10.0.0.7"
    assert refused.value.reason == "10.0.0.7 is a private address"


async def test_a_host_resolving_to_an_allowed_internal_address_passes() -> None:
    resolve = FakeResolver("10.0.0.7")
    policy = AddressPolicy.parse("10.0.0.0/24")

    assert await check_host(policy, "internal.example", 80, resolve=resolve) == ["10.0.0.7"]


async def test_repeated_addresses_are_reported_once() -> None:
    resolve = FakeResolver("8.8.8.8", "8.8.8.8", "8.8.4.4")

    assert await check_host(AddressPolicy(), "dns.example", 53, resolve=resolve) == [
        "8.8.8.8",
        "8.8.4.4",
    ]


async def test_a_host_resolving_to_an_ipv4_mapped_address_says_what_it_maps() -> None:
    resolve = FakeResolver("::ffff:169.254.169.254")

    with pytest.raises(RefusedAddress, match="cloud metadata") as refused:
        await check_host(AddressPolicy(), "metadata.example", 80, resolve=resolve)

    assert str(refused.value).startswith(
        "url host 'metadata.example' resolves to ::ffff:169.254.169.254, which maps "
        "169.254.169.254, a link-local address"
    )


async def test_a_host_that_resolves_to_nothing_is_unresolvable() -> None:
    with pytest.raises(UnresolvableHost, match=r"'empty\.example' does not resolve"):
        await check_host(AddressPolicy(), "empty.example", 80, resolve=FakeResolver())


async def test_a_host_that_does_not_resolve_is_unresolvable() -> None:
    with pytest.raises(UnresolvableHost, match=r"'no-such-host\.invalid' does not resolve") as e:
        await check_host(AddressPolicy(), "no-such-host.invalid", 443)

    assert e.value.host == "no-such-host.invalid"
    assert not e.value.temporary


async def test_a_resolver_that_cannot_answer_now_makes_a_temporary_unresolvable_host() -> None:
    async def unavailable(host: str, port: int) -> Iterable[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(UnresolvableHost, match="Temporary failure") as e:
        await check_host(AddressPolicy(), "receiver.example", 443, resolve=unavailable)

    assert e.value.temporary


async def test_localhost_resolves_to_loopback_and_is_refused() -> None:
    with pytest.raises(RefusedAddress, match="a loopback address") as refused:
        await check_host(AddressPolicy(), "localhost", 8080)

    # /etc/hosts may list ::1 before 127.0.0.1: either is the refused one.
    assert refused.value.address in ("127.0.0.1", "::1")
    assert str(refused.value).startswith("url host 'localhost' resolves to ")


@pytest.mark.parametrize(
    "spelling",
    ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.1", "127.0.1"],
)
async def test_odd_spellings_of_127_0_0_1_are_resolved_and_refused(spelling: str) -> None:
    with pytest.raises(RefusedAddress) as refused:
        await check_host(AddressPolicy(), spelling, 80)

    assert refused.value.address == "127.0.0.1"
    assert str(refused.value) == (
        f"url host {spelling!r} resolves to 127.0.0.1, a loopback address; {HINT}"
    )


@pytest.mark.parametrize(
    ("host", "predicate"),
    [
        ("127.0.0.1", "is a loopback address"),
        ("::1", "is a loopback address"),
        ("[::1]", "is a loopback address"),
        ("::ffff:127.0.0.1", "maps 127.0.0.1, a loopback address"),
        ("169.254.169.254", "is a link-local address (cloud metadata services live there)"),
    ],
)
async def test_ip_literals_go_through_the_resolver_and_are_refused(
    host: str, predicate: str
) -> None:
    with pytest.raises(RefusedAddress) as refused:
        await check_host(AddressPolicy(), host, 80)

    assert str(refused.value) == f"url host {host!r} {predicate}; {HINT}"


async def test_ip_literals_of_public_addresses_pass() -> None:
    assert await check_host(AddressPolicy(), "8.8.8.8", 443) == ["8.8.8.8"]
    assert await check_host(AddressPolicy(), "[2606:4700:4700::1111]", 443) == [
        "2606:4700:4700::1111"
    ]


async def test_localhost_passes_when_loopback_is_allowed() -> None:
    addresses = await check_host(AddressPolicy(allow_loopback=True), "localhost", 8080)

    assert "127.0.0.1" in addresses or "::1" in addresses
