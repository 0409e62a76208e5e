"""The URL box on a shared app: visitors cannot make the server open the owner's network (the rules).

Host names resolve through a table (a stand-in resolver, so the rows do not depend on this machine's
DNS). The rows that need a real HTTP server on loopback (redirects, where connections go):
``tests/integration/test_url_guard_servers.py``.
"""

from __future__ import annotations

import pytest

from pipeline.errors import SourceError
from pipeline.sources.guard import Allowed, UrlGuard, is_loopback

DNS = {
    "cam.example.com": ["93.184.216.34"],
    "evil.example.com": ["127.0.0.1"],
    "metadata.example.com": ["169.254.169.254"],
    "lan.example.com": ["192.168.1.20"],
    "mixed.example.com": ["8.8.8.8", "10.0.0.1"],
    "cgnat.example.com": ["100.64.0.7"],
    "v6.example.com": ["::ffff:127.0.0.1"],
}
PRIVATE = "private, loopback or link-local address"


def table_resolver(host: str) -> list[str]:
    if host not in DNS:
        raise SourceError(f"cannot resolve host '{host}'")
    return DNS[host]


def guard(exposed: bool = True, allow: str = "") -> UrlGuard:
    built = UrlGuard.build(exposed, allow)
    return UrlGuard(built.exposed, built.allow, resolve=table_resolver)


@pytest.mark.parametrize(
    ("url", "allow", "refusal"),
    [
        ("rtsp://cam.example.com/stream", "", None),
        ("https://cam.example.com/live/index.m3u8", "", None),
        ("http://127.0.0.1:8080/video.mjpg", "", PRIVATE),
        ("http://localhost/", "", "cannot resolve"),  # not in the table: resolution itself fails
        ("http://169.254.169.254/latest/meta-data/", "", PRIVATE),
        ("http://[::1]/", "", PRIVATE),
        ("http://[::ffff:127.0.0.1]/", "", PRIVATE),
        ("rtsp://evil.example.com/", "", PRIVATE),  # a public-looking name pointing home
        ("http://metadata.example.com/", "", PRIVATE),
        ("rtsp://lan.example.com:554/s", "", PRIVATE),
        ("http://mixed.example.com/", "", PRIVATE),  # one private record among public ones is enough
        ("http://cgnat.example.com/", "", PRIVATE),
        ("http://v6.example.com/", "", PRIVATE),
        ("http://10.1.2.3/", "", PRIVATE),
        ("http://224.0.0.1/", "", PRIVATE),
        ("file:///etc/passwd", "", "local files and paths cannot be opened"),
        ("/etc/passwd", "", "local files and paths cannot be opened"),
        ("C:\\Users\\me\\video.mp4", "", "local files and paths cannot be opened"),
        ("gopher://cam.example.com/", "", "'gopher://' URLs cannot be opened"),
        ("udp://239.0.0.1:1234", "", "'udp://' URLs cannot be opened"),
        ("http:///nohost", "", "has no host"),
        # the owner's own cameras
        ("rtsp://lan.example.com:554/s", "lan.example.com", None),
        ("rtsp://192.168.1.20/s", "192.168.1.0/24", None),
        ("rtsp://192.168.2.20/s", "192.168.1.0/24", PRIVATE),
        ("rtsp://10.0.0.5:554/s", "10.0.0.5:554", None),
        ("http://10.0.0.5:80/", "10.0.0.5:554", PRIVATE),  # allowed for its camera port only
    ],
)
def test_shared_app_rules(url: str, allow: str, refusal: str | None) -> None:
    if refusal is None:
        guard(allow=allow).check(url)
    else:
        with pytest.raises(SourceError, match=refusal):
            guard(allow=allow).check(url)


def test_local_apps_open_anything_and_credentials_never_show() -> None:
    guard(exposed=False).check("http://127.0.0.1/x")  # home cameras live on private addresses
    with pytest.raises(SourceError) as err:
        guard().check("rtsp://admin:hunter2@lan.example.com/s")
    assert "hunter2" not in str(err.value)


def test_which_binds_are_exposed() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert Allowed.parse("cam.local:554") == Allowed(host="cam.local", port=554)
    with pytest.raises(SourceError, match="not a number"):
        Allowed.parse("cam.local:http")


def test_stream_urls_are_pinned_to_the_address_that_was_checked() -> None:
    """DNS rebinding: the name answers a public address to the check and a private one to FFmpeg's own
    lookup a moment later. The URL handed on carries the checked address, so no second lookup happens."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    rebinding = UrlGuard(True, resolve=lambda host: next(answers))
    opened = rebinding.check("rtsp://admin:pw@rebind.example.com:8554/live?channel=1")
    assert opened == "rtsp://admin:pw@93.184.216.34:8554/live?channel=1"
    with pytest.raises(SourceError, match=PRIVATE):  # what FFmpeg's own lookup would have got
        rebinding.check("rtsp://rebind.example.com/live")
    v6 = UrlGuard(True, resolve=lambda host: ["2606:2800:220:1:248:1893:25c8:1946"])
    assert v6.check("rtmp://cam.example.com/live/key") == "rtmp://[2606:2800:220:1:248:1893:25c8:1946]/live/key"
    # HTTP keeps its name (Host header, TLS); its redirects are checked hop by hop instead
    assert guard().check("https://cam.example.com/live.m3u8") == "https://cam.example.com/live.m3u8"
    assert guard(exposed=False).check("rtsp://lan.example.com/s") == "rtsp://lan.example.com/s"
