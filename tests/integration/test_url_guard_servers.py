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

import av
import av.error
import pytest

from pipeline.errors import SourceError
from pipeline.sources.guard import UrlGuard
from pipeline.sources.guard_proxy import ffmpeg_guarded
from pipeline.sources.mjpeg import MjpegSource
from pipeline.sources.resolve import open_source, resolve_page, sniff_http
from tests.helpers.mjpeg_server import MjpegTestServer, free_port

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


def test_a_playlist_served_to_ffmpeg_alone_still_cannot_make_it_read_local_files(short_video, tmp_path) -> None:
    """The guard reads an HLS playlist before FFmpeg does (``tests/integration/test_hls_segment_guard.py``),
    but a server can tell the two apart (FFmpeg says ``Lavf`` in its User-Agent) and answer FFmpeg alone
    with a file:// segment: FFmpeg's protocol whitelist on a shared app, and its own rules, refuse it."""
    secret = tmp_path / "secret.ts"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(short_video), "-c", "copy", str(secret)], check=True)
    clean = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nsegment.ts\n#EXT-X-ENDLIST\n"
    asked: list[str] = []

    def route(handler) -> None:
        asked.append(handler.headers["User-Agent"])
        text = clean.replace("segment.ts", f"file://{secret}") if "Lavf" in asked[-1] else clean
        handler.reply(200, "application/vnd.apple.mpegurl", text.encode())

    states: list[tuple[str, str]] = []
    frames: list[object] = []
    with MjpegTestServer() as server:
        server.routes["/two-faced.m3u8"] = route
        source = open_source(server.url("/two-faced.m3u8"), timeout=5, guard=UrlGuard.build(True, "127.0.0.1"))
        source.start(frames.append, lambda state, detail: states.append((state, detail)))
        assert source.join(20)
    assert frames == [] and states[-1][0] == "failed", states
    assert any("Lavf" in agent for agent in asked) and not all("Lavf" in agent for agent in asked)


def test_ffmpeg_speaks_only_http_for_a_shared_app(http_dir) -> None:
    """Only http, https, tcp, tls, crypto and the proxy's tunnel: an SDP file served over HTTP, which FFmpeg
    would otherwise open by binding RTP/UDP ports, is refused at once."""
    base, root = http_dir
    (root / "cam.sdp").write_text(
        f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=cam\nc=IN IP4 127.0.0.1\nt=0 0\nm=video {free_port()} RTP/AVP 96\n"
        "a=rtpmap:96 H264/90000\n"
    )
    url = f"{base}/cam.sdp"
    proxy = ffmpeg_guarded(url, UrlGuard.build(True, "127.0.0.1"), timeout=5)
    assert proxy is not None and proxy.ffmpeg_options["protocol_whitelist"] == "http,https,tcp,tls,crypto,httpproxy"
    with av.open(url, timeout=2) as local:  # what a local app's FFmpeg does with it
        assert local.format.name == "sdp"
    with proxy, pytest.raises(av.error.InvalidDataError):
        av.open(url, options=proxy.ffmpeg_options, timeout=2)


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
    connection (httpx's sniff, FFmpeg's read through the guard's proxy) went to the checked address."""
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
    assert hosts[:3] == [f"cam.example.com:{server.port}"] * 3  # the sniff, the playlist check, then FFmpeg


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
