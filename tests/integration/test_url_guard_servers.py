"""The URL box on a shared app, against real HTTP servers on loopback: every redirect hop is checked,
connections go to the checked address, FFmpeg and yt-dlp cannot be led elsewhere. The rules on their own:
``tests/unit/test_url_guard.py``.
"""

from __future__ import annotations

import http.server
import ipaddress
import subprocess
import threading
from collections.abc import Iterator

import pytest

from pipeline.errors import SourceError
from pipeline.sources.guard import UrlGuard
from pipeline.sources.mjpeg import MjpegSource
from pipeline.sources.resolve import open_source, resolve_page, sniff_http
from tests.helpers.mjpeg_server import MjpegTestServer

PRIVATE = "private, loopback or link-local address"


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
