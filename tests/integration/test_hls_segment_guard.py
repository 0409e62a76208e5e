"""HLS on a shared app, against real HTTP servers on loopback: what a playlist lists is checked like a
typed URL before FFmpeg fetches any of it, and every request FFmpeg makes as it plays goes through the guard's
proxy (a server that answers FFmpeg otherwise than the check, a live playlist that turns, a redirect). The
playlist's server stands for the owner's camera (allowed with ``--allow-hosts 127.0.0.1:PORT``); a second
server, on another port of loopback, for a host visitors may not reach. It serves the same segments and
records every request, so a test sees that nothing was fetched from it. How a playlist is read:
``tests/unit/test_url_guard.py``; the proxy on its own: ``tests/integration/test_guard_proxy.py``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.sources.guard import UrlGuard
from pipeline.sources.resolve import open_source
from tests.helpers.collector import Collector
from tests.helpers.static_server import Served, serving
from tests.helpers.stream_servers import ffmpeg_live_hls

REFUSED = "that a shared app does not open"


@dataclass
class Hosts:
    camera: str  # the owner's camera: allowed
    folder: Path  # what the camera serves
    far: str  # another host (port): refused unless allowed too
    far_requests: list[str]
    camera_server: Served  # how the camera answers FFmpeg alone

    def guard(self, *also: str) -> UrlGuard:
        return UrlGuard.build(True, ",".join([self.camera.removeprefix("http://"), *also]))

    def play(self, playlist: str, text: str, guard: UrlGuard | None = None) -> Collector:
        (self.folder / playlist).write_bytes(text.encode())
        return Collector().run(open_source(f"{self.camera}/{playlist}", timeout=5, guard=guard or self.guard()), 40)


@pytest.fixture
def hosts(hls_vod: Path, tmp_path: Path) -> Iterator[Hosts]:
    camera_folder, far_folder = tmp_path / "camera", tmp_path / "far"
    shutil.copytree(hls_vod, camera_folder)
    shutil.copytree(hls_vod, far_folder)
    with serving(camera_folder) as camera, serving(far_folder) as far:
        yield Hosts(camera.url, camera_folder, far.url, far.requests, camera)


def media(*uris: str, head: str = "") -> str:
    """A VOD media playlist of 1 s segments."""
    segments = "".join(f"#EXTINF:1.0,\n{uri}\n" for uri in uris)
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n{head}{segments}#EXT-X-ENDLIST\n"


def master(*variants: str, head: str = "") -> str:
    return "#EXTM3U\n" + head + "".join(f"#EXT-X-STREAM-INF:BANDWIDTH=100000\n{v}\n" for v in variants)


@pytest.mark.parametrize(
    ("playlist", "what"),
    [
        (media("index0.ts", "{far}/index1.ts"), "lists a segment"),
        (master("index.m3u8", "{far}/index.m3u8"), "lists a variant playlist"),
        (master("index.m3u8", head='#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="en",URI="{far}/a.m3u8"\n'), "rendition"),
        (media("index0.ts", head='#EXT-X-KEY:METHOD=AES-128,URI="{far}/key"\n'), "lists a key"),
        (media("index0.ts", head='#EXT-X-MAP:URI="{far}/init.mp4"\n'), "lists an initialization section"),
        # spellings FFmpeg reads as the far host: a backslash-escaped attribute, NUL as a line end, no slashes
        (media("index0.ts", head='#EXT-X-KEY:METHOD=AES-128,URI="{escaped}/key"\n'), "lists a key"),
        (media("index0.ts").replace("#EXTINF:1.0,\n", "#EXTINF:1.0,\x00{far}/index1.ts\n#EXTINF:1.0,\n"), "segment"),
        (media("{bare}/index0.ts"), "not a well-formed URL"),
        # a variant on the camera whose own playlist lists the far host
        (master("inner.m3u8"), "inner.m3u8, a playlist it leads to, lists a segment"),
    ],
    ids=["segment", "variant", "rendition", "key", "map", "escaped-key", "nul-line-end", "no-slashes", "nested"],
)
def test_a_playlist_that_lists_a_refused_host_is_refused_before_anything_is_fetched(
    hosts: Hosts, playlist: str, what: str
) -> None:
    far = hosts.far
    (hosts.folder / "inner.m3u8").write_text(media("index0.ts", f"{far}/index1.ts"))
    text = playlist.format(far=far, escaped=far.replace("/", "\\/"), bare=far.replace("http://", "http:"))
    got = hosts.play("evil.m3u8", text)
    state, detail = got.states[-1]
    assert state == "failed" and what in detail and REFUSED in detail, got.states
    assert got.frames == [] and hosts.far_requests == []


def test_a_file_segment_is_refused_by_the_guard_not_by_ffmpeg(hosts: Hosts) -> None:
    got = hosts.play("evil.m3u8", media("index0.ts", f"file://{hosts.folder / 'index1.ts'}"))
    assert got.states[-1][0] == "failed" and "local files and paths cannot be opened" in got.states[-1][1]
    assert "lists a segment" in got.states[-1][1] and "not a video FFmpeg can read" not in got.states[-1][1]


def test_a_normal_playlist_on_the_allowed_camera_still_plays(hosts: Hosts) -> None:
    """A master playlist, its variant and segments, all relative, as packagers write them."""
    got = hosts.play("master.m3u8", master("index.m3u8"))
    assert len(got.frames) >= 20 and got.states[-1][0] == "ended", got.states


def test_segments_on_another_allowed_host_are_fetched(hosts: Hosts) -> None:
    """The allow-list holds for segment hosts as for the playlist's: a CDN the owner allowed plays."""
    far = hosts.far
    got = hosts.play(
        "cdn.m3u8", media(f"{far}/index0.ts", f"{far}/index1.ts"), hosts.guard(far.removeprefix("http://"))
    )
    assert len(got.frames) >= 20 and got.states[-1][0] == "ended", got.states
    assert "/index0.ts" in hosts.far_requests


def test_a_live_playlist_on_the_allowed_camera_plays_through_its_refreshes(
    short_video: Path, tmp_path: Path, hosts: Hosts
) -> None:
    """FFmpeg re-reads a live playlist every segment: under the protocol whitelist too."""
    server = ffmpeg_live_hls(short_video, hosts.folder, tmp_path / "ffmpeg.log")
    server.start()
    try:
        got = Collector(max_frames=60).run(open_source(f"{hosts.camera}/live.m3u8", timeout=5, guard=hosts.guard()), 40)
    finally:
        server.close()
    assert len(got.frames) >= 60 and got.states[-1][0] != "failed", got.states


LED_AWAY = "FFmpeg was led to a host a shared app does not open"


def test_a_playlist_served_to_ffmpeg_alone_cannot_make_it_fetch_a_refused_host(hosts: Hosts) -> None:
    """The check at open reads a clean playlist; FFmpeg (``Lavf``) is handed one with a far segment. Its
    request for it goes through the guard's proxy, which refuses it: the far host is never asked."""
    (hosts.folder / "two-faced.m3u8").write_text(media("index0.ts", "index1.ts"))
    hosts.camera_server.for_ffmpeg["/two-faced.m3u8"] = lambda body, _: body.replace(
        b"index1.ts", f"{hosts.far}/index1.ts".encode()
    )
    got = Collector().run(open_source(f"{hosts.camera}/two-faced.m3u8", timeout=5, guard=hosts.guard()), 40)
    state, detail = got.states[-1]
    assert state == "failed" and LED_AWAY in detail and "127.0.0.1" in detail, got.states
    assert hosts.far_requests == [] and hosts.camera_server.ffmpeg_asked["/two-faced.m3u8"] >= 1


def test_a_live_playlist_that_turns_to_a_refused_host_is_stopped_there(
    short_video: Path, tmp_path: Path, hosts: Hosts
) -> None:
    """FFmpeg re-reads a live playlist by itself; from its third reading on, the camera lists the far host.
    The frames before play; the far host is never asked; the source says why it reconnects."""

    def turned(body: bytes, reading: int) -> bytes:
        lines = body.decode().splitlines()
        last = max(i for i, line in enumerate(lines) if line and not line.startswith("#"))
        lines[last] = f"{hosts.far}/index0.ts"
        return "\n".join(lines).encode() + b"\n" if reading >= 3 else body

    hosts.camera_server.for_ffmpeg["/live.m3u8"] = turned
    server = ffmpeg_live_hls(short_video, hosts.folder, tmp_path / "ffmpeg.log")
    server.start()
    try:
        source = open_source(f"{hosts.camera}/live.m3u8", timeout=5, guard=hosts.guard())
        got = Collector(until="reconnecting").run(source, 40)
    finally:
        server.close()
    assert got.states[-2][0] == "reconnecting" and LED_AWAY in got.states[-2][1], got.states  # then: stopped
    assert got.frames and hosts.far_requests == [] and hosts.camera_server.ffmpeg_asked["/live.m3u8"] >= 3


def test_a_segment_that_redirects_ffmpeg_to_a_refused_host_is_not_followed(hosts: Hosts) -> None:
    hosts.camera_server.redirect_ffmpeg["/index1.ts"] = f"{hosts.far}/index1.ts"
    got = hosts.play("redirected.m3u8", media("index0.ts", "index1.ts"))
    state, detail = got.states[-1]
    assert state == "failed" and LED_AWAY in detail, got.states
    assert hosts.far_requests == [] and hosts.camera_server.ffmpeg_asked["/index1.ts"] == 1
