"""Which URLs a visitor may make the server open: the defence against server-side request forgery.

Locally (the app bound to loopback, no share link) anything goes: home cameras live on private
addresses and the visitor is the owner. When others can reach the app (``--share`` or a
non-loopback ``--host``), the URL box must not become a way to read the owner's network: only media
schemes are accepted, and every address the host name resolves to (all of them, so one public
record cannot smuggle in a private one) must be public — no loopback, private ranges, link-local
(cloud metadata at 169.254.169.254), carrier-grade NAT, multicast or reserved space — unless the
owner allowed it with ``--allow-hosts`` (their own cameras). IPv6 spellings of such addresses (NAT64,
6to4, IPv4-mapped, Teredo) count as what they embed (``addresses``). HTTP redirects are checked hop by
hop; the segments and variants of an HLS playlist before FFmpeg opens it (``hls_guard``), and every
request FFmpeg then makes as it plays, through a proxy of the app's own (``guard_proxy``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx

from pipeline.errors import SourceError
from pipeline.sources.addresses import IPAddress, IPNetwork, refusal, within
from pipeline.sources.urls import mask_url

SHARED_SCHEMES = ("http", "https", "rtsp", "rtsps", "rtmp", "rtmps", "srt")
#: the port a URL without one connects to, so ``--allow-hosts cam:80`` allows ``http://cam/`` (SRT has none)
DEFAULT_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443}
#: What FFmpeg may open for an http(s) URL on a shared app, and for what it lists: no file, data, udp or rtp (SDP);
#: ``httpproxy`` is the CONNECT tunnel to the guard's proxy for https (``guard_proxy``).
FFMPEG_PROTOCOLS = "http,https,tcp,tls,crypto,httpproxy"


def resolve_host(host: str) -> list[str]:
    """Every address ``host`` resolves to (what FFmpeg or httpx might connect to)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise SourceError(f"cannot resolve host '{host}' ({exc.strerror}); check the spelling") from None
    except UnicodeError:  # the IDNA codec refused it: an empty or over-long label, a character no name has
        raise SourceError(f"cannot resolve host '{host}' (not a valid host name); check the spelling") from None
    return sorted({info[4][0] for info in infos})


def pin_host(url: str, address: IPAddress) -> str:
    """``url`` with its host name replaced by ``address`` (credentials and port kept): RTSP, RTMP and SRT,
    whose one connection FFmpeg makes itself. FFmpeg's HTTP goes through ``guard_proxy``, which pins each."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    host = f"[{address}]" if address.version == 6 else str(address)
    netloc = (userinfo + "@" if userinfo else "") + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class Allowed:
    """One ``--allow-hosts`` entry: a host name, an address or a network, optionally with ``:port``."""

    host: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    @classmethod
    def parse(cls, entry: str) -> Allowed:
        text = entry.strip().lower()
        port = None
        if text.count(":") == 1 and "/" not in text.split(":")[1]:  # host:port or a.b.c.d:port, not IPv6
            text, raw_port = text.split(":")
            port = int(raw_port) if raw_port.isdigit() else None
            if port is None:
                raise SourceError(f"--allow-hosts: '{entry}' has a port that is not a number")
        try:
            return cls(network=ipaddress.ip_network(text.strip("[]"), strict=False), port=port)
        except ValueError:
            return cls(host=text, port=port)

    def matches(self, host: str, addresses: list[IPAddress], port: int | None) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return host == self.host or host.endswith("." + self.host)
        network = self.network
        return network is not None and bool(addresses) and all(within(a, network) for a in addresses)


@dataclass(frozen=True)
class UrlGuard:
    """``check(url)`` raises SourceError saying why a visitor may not open ``url``; local apps allow all."""

    exposed: bool
    allow: tuple[Allowed, ...] = ()
    resolve: Callable[[str], list[str]] = field(default=resolve_host, repr=False)

    @classmethod
    def build(cls, exposed: bool, allow_hosts: str = "") -> UrlGuard:
        entries = tuple(Allowed.parse(e) for e in allow_hosts.split(",") if e.strip())
        return cls(exposed, entries)

    def check(self, url: str) -> str:
        """The URL to open: as given, or for RTSP/RTMP/SRT with the host replaced by the address that
        was checked, so FFmpeg cannot be sent elsewhere by a second DNS answer (DNS rebinding)."""
        if not self.exposed:
            return url
        where = mask_url(url)
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:  # a bad port or IPv6 bracket: also in what a visitor's playlist lists
            raise SourceError(f"{where}: not a valid URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in SHARED_SCHEMES:
            what = "local files and paths" if scheme in ("", "file") or len(scheme) == 1 else f"'{scheme}://' URLs"
            raise SourceError(
                f"{where}: {what} cannot be opened on a shared app; use one of "
                f"{', '.join(s + '://' for s in SHARED_SCHEMES)}"
            )
        host = (parts.hostname or "").lower()
        if not host:
            raise SourceError(f"{where}: the URL has no host")
        address = self.address(host, port or DEFAULT_PORTS.get(scheme), where)
        return url if address is None or scheme.startswith("http") else pin_host(url.strip(), address)

    def address(self, host: str, port: int | None, where: str = "") -> IPAddress | None:
        """The checked address to connect to for ``host``: None where anything goes (a local app, the
        owner's allow-list); raises SourceError for a host a visitor may not reach."""
        if not self.exposed:
            return None
        host = host.lower().strip("[]")
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in self.resolve(host)]
        if any(entry.matches(host, addresses, port) for entry in self.allow):
            return None
        blocked = [reason for a in addresses if (reason := refusal(a))]
        if blocked:
            raise SourceError(
                f"{where or host}: '{host}' is a private, loopback or link-local address — {'; '.join(blocked)} — "
                "which a shared app does not open for visitors; the owner can allow their own cameras with "
                "--allow-hosts"
            )
        return addresses[0]


class GuardedNetwork(httpcore.SyncBackend):
    """httpx's connections on a shared app: each host is looked up and checked when the connection is
    made, and the connection goes to the address that was checked, so neither a redirect nor a second
    DNS answer (rebinding) can reach the owner's network. TLS still names the host (SNI, certificate)."""

    def __init__(self, guard: UrlGuard) -> None:
        self.guard = guard

    def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        address = self.guard.address(host, port)
        return super().connect_tcp(str(address) if address is not None else host, port, *args, **kwargs)


def guards_http(url: str, guard: UrlGuard | None) -> bool:
    """Whether what FFmpeg fetches for ``url`` over HTTP is the guard's business: an http(s) URL on a shared app."""
    return guard is not None and guard.exposed and urlsplit(url).scheme.lower() in ("http", "https")


def http_transport(guard: UrlGuard | None) -> httpx.HTTPTransport | None:
    """An httpx transport that checks every connection against ``guard`` (None: httpx's own will do)."""
    if guard is None or not guard.exposed:
        return None
    transport = httpx.HTTPTransport()
    transport._pool._network_backend = GuardedNetwork(guard)  # httpx builds its pool with no backend argument
    return transport
