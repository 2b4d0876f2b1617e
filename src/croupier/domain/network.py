"""Which addresses croupier may post webhooks to: the guard against server-side request forgery.

An endpoint URL is chosen by a tenant, and croupier posts to it from inside the operator's
network. Left alone, a URL could point croupier at the host itself (``127.0.0.1``), at the
cloud metadata service (``169.254.169.254``), or at anything on the internal network, and
read back the answer in the attempt log. So an :class:`AddressPolicy` allows only globally
reachable unicast addresses, unless the operator allows more: networks of their own
(``CROUPIER_ALLOW_NETWORKS``) or loopback for development.

The policy judges *addresses*, never names: a name is resolved first and every address it
resolves to is judged (:func:`check_host`, when an endpoint is created), and the sender
judges the very address it is about to connect to (``HttpSender(address_policy=...)``), so
a name that resolves to a public address when it is checked and to an internal one later
(DNS rebinding) gets nowhere. IPv6 addresses that carry an IPv4 address (IPv4-mapped,
IPv4-compatible, NAT64, 6to4, Teredo) are judged by the IPv4 address they lead to as well.

Everything here is pure and synchronous except :func:`check_host`, which resolves.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Final

__all__ = [
    "AddressPolicy",
    "RefusedAddress",
    "Resolver",
    "UnresolvableHost",
    "check_host",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

#: Resolves ``(host, port)`` to the addresses (as text) a connection could go to.
Resolver = Callable[[str, int], Awaitable[Iterable[str]]]

#: The end of every refusal at endpoint creation: what the operator can do about it.
_HINT: Final = (
    "croupier does not post to internal networks unless CROUPIER_ALLOW_NETWORKS allows them"
)

_LOOPBACK: Final = "a loopback address"


def _v4(text: str) -> IPv4Network:
    return IPv4Network(text)


def _v6(text: str) -> IPv6Network:
    return IPv6Network(text)


# Why an address is not public, the most specific reason first. Each entry is a range that
# IANA's special-purpose registries mark as not globally reachable. The tables are spelled
# out rather than taken from ``ipaddress.is_global`` alone, whose answers differ between
# Python releases (and miss multicast); ``is_global`` is still asked last, so an address
# that either source calls non-public is refused.
_IPV4_KINDS: Final[tuple[tuple[IPv4Network, str], ...]] = (
    (_v4("0.0.0.0/32"), "an unspecified address"),
    # "This network": connecting to 0.0.0.0/8 reaches the local host on some systems.
    (_v4("0.0.0.0/8"), "a reserved address"),
    (_v4("127.0.0.0/8"), _LOOPBACK),
    (_v4("169.254.0.0/16"), "a link-local address (cloud metadata services live there)"),
    (_v4("224.0.0.0/4"), "a multicast address"),
    (_v4("255.255.255.255/32"), "a broadcast address"),
    (_v4("10.0.0.0/8"), "a private address"),
    (_v4("172.16.0.0/12"), "a private address"),
    (_v4("192.168.0.0/16"), "a private address"),
    (_v4("100.64.0.0/10"), "a carrier-grade NAT address"),
    (_v4("192.0.0.0/24"), "a reserved address"),  # IETF protocol assignments
    (_v4("192.0.2.0/24"), "a documentation address"),
    (_v4("198.51.100.0/24"), "a documentation address"),
    (_v4("203.0.113.0/24"), "a documentation address"),
    (_v4("198.18.0.0/15"), "a benchmarking address"),
    (_v4("192.88.99.0/24"), "a reserved address"),  # the retired 6to4 relay anycast
    (_v4("240.0.0.0/4"), "a reserved address"),
)

_IPV6_KINDS: Final[tuple[tuple[IPv6Network, str], ...]] = (
    (_v6("fe80::/10"), "a link-local address"),
    (_v6("fc00::/7"), "a private address"),  # unique local addresses
    (_v6("ff00::/8"), "a multicast address"),
    (_v6("fec0::/10"), "a site-local address"),  # deprecated, but still routed by some
    (_v6("2001:db8::/32"), "a documentation address"),
    (_v6("3fff::/20"), "a documentation address"),
    (_v6("2001:2::/48"), "a benchmarking address"),
    (_v6("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (_v6("100::/64"), "a discard-only address"),
    (_v6("2001::/23"), "a reserved address"),  # IETF protocol assignments
)

#: Global unicast: every IPv6 address outside it is unallocated or special.
_IPV6_GLOBAL_UNICAST: Final = _v6("2000::/3")

# IPv6 ranges that carry an IPv4 address. A connection to one of them ends at that IPv4
# address (mapped: the kernel speaks IPv4; NAT64, 6to4, Teredo: a translator or relay does),
# so the IPv4 address is judged as if it had been given.
_MAPPED: Final = _v6("::ffff:0:0/96")
_COMPATIBLE: Final = _v6("::/96")
_TRANSLATED: Final = _v6("::ffff:0:0:0/96")
_NAT64: Final = _v6("64:ff9b::/96")
_SIX_TO_FOUR: Final = _v6("2002::/16")
_TEREDO: Final = _v6("2001::/32")

_SEPARATORS: Final = re.compile(r"[\s,]+")


@dataclass(frozen=True, slots=True)
class _Finding:
    """Why one address is refused."""

    address: IPAddress
    kind: str  # "a loopback address": a noun phrase, with its article
    #: The IPv4 address that ``address`` carries, when that is what the kind is about.
    carried: IPv4Address | None = None

    @property
    def shown(self) -> str:
        mapped = self.address.ipv4_mapped if isinstance(self.address, IPv6Address) else None
        # Python spells ``::ffff:127.0.0.1`` as ``::ffff:7f00:1``; people write the former.
        return f"::ffff:{mapped}" if mapped is not None else str(self.address)

    @property
    def predicate(self) -> str:
        """``is a loopback address``; ``maps 127.0.0.1, a loopback address``."""
        if self.carried is None:
            return f"is {self.kind}"
        verb = "maps" if self.address in _MAPPED else "embeds"
        return f"{verb} {self.carried}, {self.kind}"

    @property
    def sentence(self) -> str:
        return f"{self.shown} {self.predicate}"

    @property
    def appositive(self) -> str:
        """What follows "resolves to": ``10.0.0.7, a private address``."""
        if self.carried is None:
            return f"{self.shown}, {self.kind}"
        return f"{self.shown}, which {self.predicate}"


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which addresses a webhook may be posted to.

    The default, ``AddressPolicy()``, allows only public addresses: globally reachable
    unicast. Everything else (loopback, private, link-local with the cloud metadata
    service, carrier-grade NAT, multicast, broadcast, unspecified, documentation,
    benchmarking, reserved) is refused, unless it lies in one of the ``allow`` networks, or
    it is a loopback address and ``allow_loopback`` is set.

    Build one from text with :meth:`parse`; :meth:`permissive` allows everything.
    """

    allow: tuple[IPNetwork, ...] = ()
    allow_loopback: bool = False

    def __post_init__(self) -> None:
        for network in self.allow:
            if not isinstance(network, IPv4Network | IPv6Network):
                raise TypeError(
                    f"allow holds networks, not {network!r}: AddressPolicy.parse reads text"
                )

    @classmethod
    def parse(
        cls, allow_networks: str | Sequence[str] = (), *, allow_loopback: bool = False
    ) -> AddressPolicy:
        """A policy that also allows ``allow_networks``: CIDRs or single addresses.

        ``allow_networks`` is one string of entries separated by commas or spaces
        (``"10.0.0.0/8, 192.168.1.5, fd00::/8"``), or a sequence of such strings. A network
        in IPv4-mapped form (``::ffff:10.0.0.0/104``) is read as the IPv4 network it maps.
        Raises ``ValueError`` naming the first entry that is neither a network nor an
        address, or that has host bits set (``10.0.0.1/8``).
        """
        texts = [allow_networks] if isinstance(allow_networks, str) else list(allow_networks)
        networks: list[IPNetwork] = []
        for text in texts:
            networks += (_network(entry) for entry in _SEPARATORS.split(text) if entry)
        return cls(allow=tuple(dict.fromkeys(networks)), allow_loopback=allow_loopback)

    @classmethod
    def permissive(cls) -> AddressPolicy:
        """A policy that allows every address, internal ones included.

        For tests, benchmarks and development only, where receivers listen on 127.0.0.1:
        a production croupier with it posts wherever a tenant's URL points.
        """
        return cls(allow=(_v4("0.0.0.0/0"), _v6("::/0")), allow_loopback=True)

    @property
    def allow_spec(self) -> str:
        """The ``allow`` networks as text that :meth:`parse` reads back (``""`` for none).

        ``AddressPolicy.parse(p.allow_spec, allow_loopback=p.allow_loopback) == p``: the
        form in which a policy crosses a process boundary (a command line, an environment).
        """
        return " ".join(str(network) for network in self.allow)

    def refusal(self, ip: str | IPv4Address | IPv6Address) -> str | None:
        """None if ``ip`` may be connected to, else why not, in a short sentence.

        ``ip`` is an address in its standard spelling (as ``getaddrinfo`` returns it), IPv6
        with or without a scope id (``fe80::1%eth0``) or brackets; anything else raises
        ``ValueError``. Odd spellings of IPv4 (``2130706433``, ``0x7f000001``, ``127.1``)
        are for the resolver to turn into addresses first, as :func:`check_host` does.
        """
        finding = self._finding(_address(ip))
        return None if finding is None else finding.sentence

    def _finding(self, address: IPAddress) -> _Finding | None:
        carried = _carried(address)
        if any(
            candidate in network
            for candidate in (address, carried)
            if candidate is not None
            for network in self.allow
        ):
            return None
        finding = _classify(address, carried)
        if finding is None or (self.allow_loopback and finding.kind == _LOOPBACK):
            return None
        return finding


class RefusedAddress(ValueError):
    """A host resolves to (or is) an address the policy refuses."""

    def __init__(self, host: str, address: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.host = host
        #: The refused address, as the resolver gave it.
        self.address = address
        #: The policy's sentence about it: ``10.0.0.7 is a private address``.
        self.reason = reason


class UnresolvableHost(ValueError):
    """A host that does not resolve to any address (now, at least).

    ``temporary`` is set when the resolver could not answer (``EAI_AGAIN``) rather than
    answered that the name has no address.
    """

    def __init__(self, host: str, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.host = host
        self.temporary = temporary


async def check_host(
    policy: AddressPolicy, host: str, port: int, *, resolve: Resolver | None = None
) -> list[str]:
    """The addresses ``host`` resolves to, once every one of them is allowed by ``policy``.

    Raises :class:`RefusedAddress` if *any* address is refused: a connection may pick any
    of them, and a name that mixes public and internal addresses is suspicious anyway.
    Raises :class:`UnresolvableHost` if the name does not resolve. An IP literal goes the
    same way, so every spelling the system resolver accepts (``2130706433``,
    ``0x7f000001``, ``0177.0.0.1``, ``127.1``) is judged as the address it means.
    ``resolve`` defaults to the event loop's ``getaddrinfo``.

    Passing here is no promise for later: names move. The sender checks again, on the
    address it connects to.
    """
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        resolved = list(dict.fromkeys(await (resolve or _getaddrinfo)(name, port)))
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UnresolvableHost(
            host,
            f"url host {host!r} does not resolve: {reason}",
            temporary=isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_AGAIN,
        ) from exc
    if not resolved:
        raise UnresolvableHost(host, f"url host {host!r} does not resolve to any address")
    for text in resolved:
        address = _address(text)
        finding = policy._finding(address)
        if finding is None:
            continue
        if _same_address(name, address):
            message = f"url host {host!r} {finding.predicate}"
        else:
            message = f"url host {host!r} resolves to {finding.appositive}"
        raise RefusedAddress(host, text, finding.sentence, f"{message}; {_HINT}")
    return resolved


async def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# -- classification ---------------------------------------------------------------------------


def _classify(address: IPAddress, carried: IPv4Address | None) -> _Finding | None:
    if isinstance(address, IPv4Address):
        kind = _ipv4_kind(address)
        return None if kind is None else _Finding(address, kind)
    if address.is_unspecified:
        return _Finding(address, "an unspecified address")
    if address.is_loopback:
        return _Finding(address, _LOOPBACK)
    if carried is not None:
        kind = _ipv4_kind(carried)
        if kind is not None:
            return _Finding(address, kind, carried)
        wrapper = _wrapper_kind(address)
        return None if wrapper is None else _Finding(address, wrapper)
    kind = next((kind for network, kind in _IPV6_KINDS if address in network), None)
    if kind is None and (address not in _IPV6_GLOBAL_UNICAST or not address.is_global):
        kind = "a reserved address"
    return None if kind is None else _Finding(address, kind)


def _ipv4_kind(address: IPv4Address) -> str | None:
    for network, kind in _IPV4_KINDS:
        if address in network:
            return kind
    return None if address.is_global else "a reserved address"


def _carried(address: IPAddress) -> IPv4Address | None:
    """The IPv4 address an IPv6 address leads to, if it is one of the forms that carry one."""
    if isinstance(address, IPv4Address) or address.is_unspecified or address.is_loopback:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _COMPATIBLE or address in _TRANSLATED or address in _NAT64:
        return IPv4Address(int(address) & 0xFFFF_FFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client; the first is the Teredo server
    return None


def _wrapper_kind(address: IPv6Address) -> str | None:
    """What an IPv6 address that carries a public IPv4 one is in itself; None if routable."""
    if address in _MAPPED or address in _NAT64 or address in _SIX_TO_FOUR:
        return None
    if address in _TEREDO:
        return "a Teredo tunnel address"
    if address in _COMPATIBLE:
        return "a deprecated IPv4-compatible address"
    return "a reserved address"


# -- text -------------------------------------------------------------------------------------


def _address(ip: str | IPAddress) -> IPAddress:
    if not isinstance(ip, str):
        return ip
    text = ip[1:-1] if ip.startswith("[") and ip.endswith("]") else ip
    return ip_address(text)


def _same_address(host: str, address: IPAddress) -> bool:
    try:
        return _address(host) == address
    except ValueError:
        return False


def _network(entry: str) -> IPNetwork:
    try:
        network = ip_network(entry)
    except ValueError as exc:
        try:
            loose = ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(
                f"allow-list entry {entry!r} is neither an IP network in CIDR notation "
                "(such as 10.0.0.0/8 or fd00::/8) nor an IP address"
            ) from exc
        raise ValueError(
            f"allow-list entry {entry!r} has host bits set: write {loose} for the network"
        ) from exc
    if isinstance(network, IPv6Network) and network.subnet_of(_MAPPED):
        return IPv4Network(
            (int(network.network_address) & 0xFFFF_FFFF, network.prefixlen - _MAPPED.prefixlen)
        )
    return network
