"""The guard's proxy on its own (``pipeline/sources/guard_proxy.py``), with real clients: FFmpeg's https
through its CONNECT tunnel, httpx as a second client, and a stream it must cut when it closes. How it keeps a
shared app's HLS on the hosts the guard allows: ``tests/integration/test_hls_segment_guard.py``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import pytest

from pipeline.errors import SourceError
from pipeline.sources.guard import UrlGuard
from pipeline.sources.guard_proxy import GuardProxy, drop_no_proxy, ffmpeg_guarded
from tests.helpers.mjpeg_server import Handler, MjpegTestServer
from tests.helpers.static_server import Served, self_signed, serving

NOTHING_ALLOWED = UrlGuard.build(True)


def allowing(url: str) -> UrlGuard:
    return UrlGuard.build(True, url.split("://", 1)[1])


@pytest.fixture(scope="module")
def https_camera(hls_vod: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(hls_vod, tls=self_signed(tmp_path_factory.mktemp("tls"))) as served:
        yield served


def test_only_a_shared_apps_http_streams_get_a_proxy() -> None:
    assert ffmpeg_guarded("http://cam/x.m3u8", UrlGuard.build(False), 5) is None  # local: anything goes
    assert ffmpeg_guarded("rtsp://cam/x", NOTHING_ALLOWED, 5) is None  # one connection, checked and pinned
    assert ffmpeg_guarded("https://cam/x.m3u8", None, 5) is None
    proxy = ffmpeg_guarded("HTTPS://cam/x.m3u8", NOTHING_ALLOWED, 5)
    assert isinstance(proxy, GuardProxy)
    proxy.close()


def test_ffmpeg_plays_https_through_the_tunnel_to_an_allowed_host(https_camera: Served) -> None:
    https_camera.requests.clear()
    with GuardProxy(allowing(https_camera.url), timeout=5) as proxy:
        container = av.open(f"{https_camera.url}/index.m3u8", options=proxy.ffmpeg_options, timeout=5)
        frames = sum(1 for _ in container.decode(video=0))
        container.close()
    assert frames >= 20 and proxy.refused is None
    assert https_camera.requests[:2] == ["/index.m3u8", "/index0.ts"]


def test_ffmpeg_https_to_a_refused_host_never_reaches_it(https_camera: Served) -> None:
    https_camera.requests.clear()
    with GuardProxy(NOTHING_ALLOWED, timeout=5) as proxy:
        with pytest.raises(av.error.FFmpegError, match="403"):
            av.open(f"{https_camera.url}/index.m3u8", options=proxy.ffmpeg_options, timeout=5)
        with pytest.raises(SourceError, match=r"FFmpeg was led to a host a shared app does not open: .*loopback"):
            proxy.check()
    assert https_camera.requests == []


def test_the_proxy_answers_what_it_does_not_pass(hls_vod: Path) -> None:
    """httpx as a second client: a refused host gets 403 with the guard's reason, another method 405, and an
    allowed GET the file byte for byte, one request per connection."""
    with serving(hls_vod) as camera, GuardProxy(allowing(camera.url), timeout=5) as proxy:
        with httpx.Client(proxy=proxy.url, timeout=5) as client:
            got = client.get(f"{camera.url}/index0.ts")
            assert got.status_code == 200 and got.content == (hls_vod / "index0.ts").read_bytes()
            assert got.headers["connection"] == "close"
            refused = client.get("http://127.0.0.2:9/secret")
            assert refused.status_code == 403 and "127.0.0.2" in refused.text and "loopback" in refused.text
            assert client.post(f"{camera.url}/index0.ts", content=b"x").status_code == 405
        assert camera.requests == ["/index0.ts"]
        assert proxy.refused is not None and "127.0.0.2" in proxy.refused


def test_closing_cuts_a_stream_it_relays_and_joins_its_threads(hls_vod: Path) -> None:
    """A camera that never stops sending: close() ends the relay, and no thread of the proxy is left."""
    sending = threading.Event()

    def endless(handler: Handler) -> None:
        handler.start_stream("video/mp2t")
        while not handler.closing.is_set():
            handler.wfile.write(b"\0" * 4096)
            sending.set()

    with MjpegTestServer() as camera:
        camera.routes["/live.ts"] = endless
        proxy = GuardProxy(UrlGuard.build(True, f"127.0.0.1:{camera.port}"), timeout=5)
        with proxy, httpx.Client(proxy=proxy.url, timeout=5) as client, client.stream("GET", camera.url("/live.ts")):
            assert sending.wait(10)
            proxy.close()
        left = [t.name for t in threading.enumerate() if t.name.startswith("source-proxy")]
        assert left == []


def test_no_proxy_would_let_ffmpeg_past_the_proxy_so_a_shared_app_drops_it(
    hls_vod: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FFmpeg reads ``no_proxy`` from the environment and connects directly to the hosts it names: the
    guard never sees them. ``drop_no_proxy`` (called by a shared app at start) removes it and says so."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with serving(hls_vod) as camera, GuardProxy(NOTHING_ALLOWED, timeout=5) as proxy:
        with av.open(f"{camera.url}/index.m3u8", options=proxy.ffmpeg_options, timeout=5):
            assert camera.requests[0] == "/index.m3u8" and proxy.refused is None  # straight past the guard
        asked = len(camera.requests)
        assert (
            drop_no_proxy()
            == "no_proxy (127.0.0.1) is ignored on a shared app: FFmpeg's requests go through the URL guard"
        )
        with pytest.raises(av.error.FFmpegError, match="403"):
            av.open(f"{camera.url}/index.m3u8", options=proxy.ffmpeg_options, timeout=5)
        assert len(camera.requests) == asked and proxy.refused is not None
    assert drop_no_proxy() is None
