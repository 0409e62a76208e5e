"""Which IP addresses a shared app's visitors may reach, and in words why not where they may not.

An IPv6 address can stand for an IPv4 one: a NAT64 translator (``64:ff9b::/96``, RFC 6052) turns
``64:ff9b::a9fe:a9fe`` into 169.254.169.254, a 6to4 relay (``2002::/16``) does the same with
``2002:a9fe:a9fe::``, and IPv4-mapped (``::ffff:a.b.c.d``) and IPv4-compatible (``::a.b.c.d``) spellings
are the IPv4 address itself to many stacks. Python counts most of these as globally reachable, so
each is judged by the IPv4 address it embeds: on a network that translates them, they reach it.
NAT64's local-use prefix (``64:ff9b:1::/48``, RFC 8215) is refused whole, since where its IPv4 address
sits depends on a prefix length only the local network knows; Teredo (``2001::/32``) is a tunnel
through its server to its client and is refused whole too.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_loopback(host: str) -> bool:
    """Whether an address to listen on keeps the app on this machine only."""
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
CLOUD_METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254"))
KINDS = ("unspecified", "loopback", "link-local", "multicast", "private")


def embedded_ipv4(address: IPAddress) -> tuple[str, list[ipaddress.IPv4Address]]:
    """How an IPv6 address stands for IPv4 addresses, and which (Teredo: its server and its client);
    ``("", [])`` for one that does not, and for any IPv4 address."""
    if isinstance(address, ipaddress.IPv4Address):
        return "", []
    last32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", [address.ipv4_mapped]
    if address in NAT64:
        return "NAT64", [last32]
    if address.sixtofour is not None:
        return "6to4", [address.sixtofour]
    if address.teredo is not None:
        return "Teredo", list(address.teredo)
    if address in IPV4_COMPATIBLE and int(address) > 1:  # not :: (unspecified) nor ::1 (loopback)
        return "IPv4-compatible", [last32]
    return "", []


def kind(address: IPAddress) -> str | None:
    """What a visitor may not reach at ``address`` (``loopback``, ``link-local: cloud metadata`` …),
    judged on the address alone; None for a public one."""
    if address.is_global and not address.is_multicast:
        return None
    name = next((k for k in KINDS if getattr(address, "is_" + k.replace("-", "_"))), "not globally reachable")
    return f"{name}: cloud metadata" if address in CLOUD_METADATA else name


def refusal(address: IPAddress) -> str | None:
    """Why a visitor may not reach ``address``, naming what it embeds (``NAT64 address 64:ff9b::a9fe:a9fe
    embeds 169.254.169.254 (link-local: cloud metadata)``); None for a public address."""
    if address in NAT64_LOCAL:
        return f"{address} is in NAT64's local-use prefix {NAT64_LOCAL}, which may translate to any IPv4 address"
    how, embedded = embedded_ipv4(address)
    blocked = [f"{ipv4} ({reason})" for ipv4 in embedded if (reason := kind(ipv4))]
    if blocked:
        return f"{how} address {address} embeds {' and '.join(blocked)}"
    if how == "Teredo":
        server, client = embedded
        return f"Teredo address {address} (a tunnel through {server} to {client})"
    reason = None if how else kind(address)  # an embedded public IPv4 address is what the address reaches
    return f"{address} ({reason})" if reason else None


def within(address: IPAddress, network: IPNetwork) -> bool:
    """Whether ``address`` is in an allowed ``network``, by itself or by every IPv4 address it embeds:
    ``64:ff9b::a00:5`` reaches 10.0.0.5, so ``--allow-hosts 10.0.0.0/8`` allows it too."""
    embedded = embedded_ipv4(address)[1]
    return address in network or (bool(embedded) and all(ipv4 in network for ipv4 in embedded))
