"""The URL box on a shared app: visitors cannot make the server open the owner's network (the rules).

Host names resolve through a table (a stand-in resolver, so the rows do not depend on this machine's
DNS). The rows that need a real HTTP server on loopback (redirects, where connections go):
``tests/integration/test_url_guard_servers.py``. How an HLS playlist is read before FFmpeg reads it
(the same URIs FFmpeg's HLS demuxer finds, whatever the spelling) is at the end; against real servers:
``tests/integration/test_hls_segment_guard.py``.
"""

from __future__ import annotations

import pytest

from pipeline.errors import SourceError
from pipeline.sources.addresses import is_loopback
from pipeline.sources.guard import Allowed, UrlGuard
from pipeline.sources.hls_guard import Listed, absolute, attributes, listed

DNS = {
    "cam.example.com": ["93.184.216.34"],
    "evil.example.com": ["127.0.0.1"],
    "metadata.example.com": ["169.254.169.254"],
    "lan.example.com": ["192.168.1.20"],
    "mixed.example.com": ["8.8.8.8", "10.0.0.1"],
    "cgnat.example.com": ["100.64.0.7"],
    "v6.example.com": ["::ffff:127.0.0.1"],
    "nat64.example.com": ["64:ff9b::a9fe:a9fe"],
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
        ("http://10.0.0.5/", "10.0.0.5:80", None),  # the scheme's own port, unwritten
        ("rtsp://10.0.0.5/s", "10.0.0.5:554", None),
        ("https://10.0.0.5/", "10.0.0.5:80", PRIVATE),
    ],
)
def test_shared_app_rules(url: str, allow: str, refusal: str | None) -> None:
    if refusal is None:
        guard(allow=allow).check(url)
    else:
        with pytest.raises(SourceError, match=refusal):
            guard(allow=allow).check(url)


@pytest.mark.parametrize(
    ("host", "how", "embeds"),
    [
        (
            "[64:ff9b::a9fe:a9fe]",
            "NAT64 address",
            "64:ff9b::a9fe:a9fe embeds 169.254.169.254 (link-local: cloud metadata)",
        ),
        ("[2002:a9fe:a9fe::]", "6to4 address", "2002:a9fe:a9fe:: embeds 169.254.169.254 (link-local: cloud metadata)"),
        ("[64:ff9b::7f00:1]", "NAT64 address", "embeds 127.0.0.1 (loopback)"),
        ("[2002:7f00:1::]", "6to4 address", "embeds 127.0.0.1 (loopback)"),
        ("[::ffff:10.0.0.5]", "IPv4-mapped address", "embeds 10.0.0.5 (private)"),
        ("[::127.0.0.1]", "IPv4-compatible address", "embeds 127.0.0.1 (loopback)"),
        # Teredo: the client's IPv4 address is stored inverted (10.0.0.5 as f5ff:fffa), the server's as is
        ("[2001:0:808:808::f5ff:fffa]", "Teredo address", "embeds 10.0.0.5 (private)"),
        ("[2001:0:a00:5::f7f7:f7f7]", "Teredo address", "embeds 10.0.0.5 (private)"),
        ("[2001:0:808:808::f7f7:f7f7]", "Teredo address", "a tunnel through 8.8.8.8 to 8.8.8.8"),  # refused whole
        ("[64:ff9b:1::a00:5]", "", "64:ff9b:1::a00:5 is in NAT64's local-use prefix 64:ff9b:1::/48"),
        ("nat64.example.com", "NAT64 address", "embeds 169.254.169.254 (link-local: cloud metadata)"),  # by DNS
    ],
)
def test_ipv6_spellings_of_private_ipv4_addresses_are_refused_saying_what_they_embed(
    host: str, how: str, embeds: str
) -> None:
    """On a network that translates or tunnels them, these reach the IPv4 address inside them."""
    with pytest.raises(SourceError) as err:
        guard().check(f"http://{host}/latest/meta-data/")
    assert how in str(err.value) and embeds in str(err.value) and PRIVATE in str(err.value)


@pytest.mark.parametrize(
    ("host", "allow"),
    [
        ("[64:ff9b::808:808]", ""),  # NAT64, 6to4 and mapped spellings of a public address are public
        ("[2002:808:808::]", ""),
        ("[::ffff:8.8.8.8]", ""),
        # an allowed IPv4 network allows the IPv6 spellings that reach it: they reach the same cameras
        ("[64:ff9b::a00:5]", "10.0.0.0/8"),
        ("[2002:a00:5::]", "10.0.0.0/8"),
        ("[::ffff:10.0.0.5]", "10.0.0.0/8"),
        ("[64:ff9b:1::a00:5]", "64:ff9b:1::/48"),  # the local-use prefix only where allowed as such
    ],
)
def test_ipv6_spellings_that_reach_public_or_allowed_addresses_pass(host: str, allow: str) -> None:
    guard(allow=allow).check(f"rtsp://{host}/s")


def test_an_allowed_ipv4_network_does_not_allow_other_embedded_addresses() -> None:
    for host in ("[64:ff9b::a9fe:a9fe]", "[64:ff9b:1::a00:5]", "[2001:0:808:808::f5ff:fffa]"):
        with pytest.raises(SourceError, match=PRIVATE):
            guard(allow="10.0.0.0/8").check(f"rtsp://{host}/s")  # the Teredo server 8.8.8.8 is not in it


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


# --- HLS playlists, read as FFmpeg reads them -----------------------------------------------------

PLAYLIST = "http://cam.example.com:8080/live/index.m3u8"


def test_attributes_are_read_as_ffmpeg_reads_them() -> None:
    """ff_parse_key_value: quoted values with backslash escapes, bare ones up to a comma or space."""
    line = r'METHOD=AES-128,URI="http:\/\/10.0.0.5\"/k",IV=0x1 URI=bare,KEYFORMAT="a,b"'
    assert list(attributes(line)) == [
        ("METHOD", "AES-128"),
        ("URI", 'http://10.0.0.5"/k'),
        ("IV", "0x1"),
        ("URI", "bare"),  # every URI, not only the last one FFmpeg keeps
        ("KEYFORMAT", "a,b"),
    ]
    assert list(attributes('URI="unterminated\\')) == [("URI", "unterminated")]
    assert list(attributes("no pairs here")) == []


def test_every_uri_ffmpeg_would_open_is_listed() -> None:
    playlist = (
        "#EXTM3U\r\n"
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="en",URI="audio.m3u8"\n'
        '#EXT-X-STREAM-INF:BANDWIDTH=1000,CODECS="avc1,mp4a"\n'
        "  video.m3u8  \n"
        '#EXT-X-KEY:METHOD=AES-128,URI="key.bin"\n'
        '#EXT-X-MAP:URI="init.mp4"\n'
        "#EXTINF:1.0,\x00http://10.0.0.5/hidden.ts\n"  # FFmpeg ends a line at NUL too
        "#EXTINF:1.0,title with URI=x\n"  # a title, not a tag's attributes
        "# a comment\n"
        "seg1.ts\r"
        "#EXT-X-ENDLIST\n"
    )
    assert listed(playlist.encode()) == [
        Listed("audio.m3u8", "a rendition playlist", playlist=True),
        Listed("video.m3u8", "a variant playlist", playlist=True),
        Listed("key.bin", "a key", playlist=False),
        Listed("init.mp4", "an initialization section", playlist=False),
        Listed("http://10.0.0.5/hidden.ts", "a segment", playlist=False),
        Listed("seg1.ts", "a segment", playlist=False),
    ]
    assert listed(b'#EXT-X-SESSION-KEY:URI="//x/k"')[0].what == "the URI of an #EXT-X-SESSION-KEY tag"


def test_a_line_longer_than_ffmpeg_reads_is_listed_as_ffmpeg_cuts_it_and_whole() -> None:
    """FFmpeg keeps a line's first 4095 bytes: with a long user name in front, a host cut there is another."""
    cut = "http://" + "u" * (4095 - len("http://@cam.example.co")) + "@cam.example.co"
    assert len(cut) == 4095
    uris = [item.uri for item in listed(f"#EXTINF:1.0,\n{cut}m/seg.ts\n".encode())]
    assert uris == [cut, f"{cut}m/seg.ts"]
    assert [item.uri for item in listed(b"\xff\xfe seg\xe9.ts\n")] == ["\ufffd\ufffd seg\ufffd.ts"]


@pytest.mark.parametrize(
    ("uri", "url"),
    [
        ("seg.ts", "http://cam.example.com:8080/live/seg.ts"),
        ("/other/seg.ts", "http://cam.example.com:8080/other/seg.ts"),
        ("//cdn.example.com/seg.ts", "http://cdn.example.com/seg.ts"),
        ("https://cdn.example.com/seg.ts", "https://cdn.example.com/seg.ts"),
        ("file:///etc/passwd", "file:///etc/passwd"),  # the guard refuses it by its scheme
    ],
)
def test_uris_resolve_against_the_playlist(uri: str, url: str) -> None:
    assert absolute(uri, PLAYLIST) == url


@pytest.mark.parametrize(
    "uri",
    [
        "http:10.0.0.5/a.ts",  # a path to Python's urljoin, host 10.0.0.5 to FFmpeg
        "HTTP:/10.0.0.5/a.ts",
        "http://10.0.0.5\\@cam.example.com/a.ts",
        "http://cam.example.com /a.ts",
        "//[::1/a.ts",
    ],
)
def test_a_host_spelled_two_ways_is_refused(uri: str) -> None:
    with pytest.raises(SourceError, match="not a well-formed URL"):
        absolute(uri, PLAYLIST)
