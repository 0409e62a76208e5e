"""The URL box on a shared app: visitors cannot make the server open the owner's network.

Host names resolve through a table (a stand-in resolver, so the rows do not depend on this machine's
DNS); the redirect rows use a real HTTP server on loopback that the owner allowed by port.
"""

from __future__ import annotations

import http.server
import ipaddress
import subprocess
import threading
from collections.abc import Iterator

import pytest
from mjpeg_server import MjpegTestServer

from pipeline.errors import SourceError
from pipeline.sources.guard import Allowed, UrlGuard, is_loopback
from pipeline.sources.mjpeg import MjpegSource
from pipeline.sources.resolve import open_source, resolve_page, sniff_http

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


class _Redirect(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        if self.path == "/ok":
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.end_headers()
            return
        self.send_response(302)
        self.send_header("Location", self.target)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def redirector() -> Iterator[tuple[int, type[_Redirect]]]:
    handler = type("Handler", (_Redirect,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize(
    "target",
    ["http://127.0.0.1:1/admin", "http://169.254.169.254/latest/meta-data/", "http://[::1]:8080/"],
)
def test_every_redirect_hop_is_checked(redirector, target: str) -> None:
    port, handler = redirector
    handler.target = target
    allowed_camera = UrlGuard.build(True, f"127.0.0.1:{port}")  # the owner's camera, on this port only
    with pytest.raises(SourceError, match=PRIVATE):
        sniff_http(f"http://127.0.0.1:{port}/cam", timeout=5, guard=allowed_camera)


def test_a_redirect_within_the_allowed_camera_is_followed(redirector) -> None:
    port, handler = redirector
    handler.target = f"http://127.0.0.1:{port}/ok"
    assert sniff_http(f"http://127.0.0.1:{port}/cam", timeout=5, guard=UrlGuard.build(True, f"127.0.0.1:{port}")) == (
        "video"
    )


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


def test_a_remote_playlist_cannot_make_ffmpeg_read_local_files(http_dir, short_video, tmp_path) -> None:
    """An HLS playlist on an allowed host that lists a file:// segment: FFmpeg refuses it."""
    base, root = http_dir
    secret = tmp_path / "secret.ts"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(short_video), "-c", "copy", str(secret)], check=True)
    (root / "evil.m3u8").write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nfile://{secret}\n#EXT-X-ENDLIST\n"
    )
    source = open_source(f"{base}/evil.m3u8", timeout=5, guard=UrlGuard.build(True, "127.0.0.1"))
    states: list[tuple[str, str]] = []
    frames: list[object] = []
    source.start(frames.append, lambda state, detail: states.append((state, detail)))
    assert source.join(20)
    assert frames == [] and states[-1][0] == "failed", states


class CheckedAsPublic(UrlGuard):
    """A shared app's guard whose check of ``cam.example.com`` found a public address — stood in for
    by loopback, where the test's server is — so the test sees where connections really go."""

    def address(self, host: str, port: int | None, where: str = "") -> ipaddress.IPv4Address | None:
        assert host == "cam.example.com", host
        return ipaddress.ip_address("127.0.0.1")


@pytest.fixture
def video_server(short_video, tmp_path) -> Iterator[tuple[MjpegTestServer, list[str]]]:
    """Serves an MPEG-TS clip at /clip.ts and records the Host header of every request."""
    clip = tmp_path / "clip.ts"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(short_video), "-c", "copy", str(clip)], check=True)
    hosts: list[str] = []

    def route(handler) -> None:
        hosts.append(handler.headers["Host"])
        handler.reply(200, "video/mp2t", clip.read_bytes())

    server = MjpegTestServer()
    server.routes["/clip.ts"] = route
    yield server, hosts
    server.close()


def test_http_streams_go_to_the_checked_address_with_their_name_in_the_host_header(video_server) -> None:
    """``cam.example.com`` resolves nowhere on this machine: the stream plays only because every
    connection (httpx's sniff, FFmpeg's read) went to the checked address."""
    server, hosts = video_server
    url = f"http://cam.example.com:{server.port}/clip.ts"
    source = open_source(url, timeout=5, guard=CheckedAsPublic(True))
    playing = threading.Event()
    states: list[str] = []
    source.start(lambda frame: playing.set(), lambda state, detail: states.append(state))
    try:
        assert playing.wait(30), states
    finally:
        source.stop()
    assert hosts[:2] == [f"cam.example.com:{server.port}"] * 2  # the sniff, then FFmpeg


def test_a_host_rebound_to_a_private_address_is_refused_when_httpx_connects(video_server) -> None:
    """The URL passed the check at Start (public answer); the connection's own lookup gets 127.0.0.1
    and is refused."""
    server, hosts = video_server
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    rebinding = UrlGuard(True, resolve=lambda host: next(answers))
    url = f"http://rebind.example.com:{server.port}/clip.ts"
    assert rebinding.check(url) == url  # what the app does at Start
    with pytest.raises(SourceError, match=PRIVATE):
        sniff_http(url, timeout=5, guard=rebinding)
    assert hosts == []  # nothing reached the server


def test_mjpeg_cameras_connect_through_the_guard_too(video_server) -> None:
    server, hosts = video_server
    source = MjpegSource(f"http://cam.example.com:{server.port}/clip.ts", guard=CheckedAsPublic(True), read_timeout=5)
    states: list[tuple[str, str]] = []
    source.start(lambda frame: None, lambda state, detail: states.append((state, detail)))
    assert source.join(20)
    assert hosts == [f"cam.example.com:{server.port}"], states  # reached the checked address by name


def test_a_shared_app_does_not_let_yt_dlp_follow_a_visitors_page(http_dir, short_video) -> None:
    """Locally yt-dlp's generic extractor finds the video a page embeds; on a shared app only site
    extractors run, since the generic one fetches whatever the page points at (internal addresses too)."""
    pytest.importorskip("yt_dlp")
    base, root = http_dir
    (root / "clip.mp4").write_bytes(short_video.read_bytes())
    (root / "page.html").write_text('<html><body><video src="clip.mp4" controls></video></body></html>')
    assert resolve_page(f"{base}/page.html") == f"{base}/clip.mp4"
    with pytest.raises(SourceError, match="a shared app plays only pages of sites yt-dlp knows"):
        resolve_page(f"{base}/page.html", UrlGuard.build(True, "127.0.0.1"))
