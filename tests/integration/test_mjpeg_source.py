"""MJPEG over HTTP, the source against real loopback servers: a threaded Python server and FFmpeg's own
``-f mpjpeg -listen 1`` server. The multipart parser on its own: ``tests/unit/test_mjpeg_parser.py``.
"""

from __future__ import annotations

import base64
import itertools
import random
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.frames import Frame
from pipeline.sources.mjpeg import MjpegSource
from pipeline.sources.urls import mask_url
from tests.helpers.mjpeg_server import (
    FfmpegServer,
    Handler,
    MjpegTestServer,
    frame_id,
    frame_jpeg,
    multipart,
)

# -- source: helpers ------------------------------------------------------------------------------


class Recorder:
    """Collects frames and statuses from the source thread; tests wait on its condition, never sleep."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.frames: list[Frame] = []
        self.statuses: list[tuple[str, str]] = []

    def on_frame(self, frame: Frame) -> None:
        with self.cond:
            self.frames.append(frame)
            self.cond.notify_all()

    def on_status(self, state: str, detail: str) -> None:
        with self.cond:
            self.statuses.append((state, detail))
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def wait_frames(self, n: int, timeout: float = 10.0) -> None:
        assert self.wait(lambda: len(self.frames) >= n or self.final is not None, timeout), self.statuses
        assert len(self.frames) >= n, self.statuses

    def wait_final(self, timeout: float = 10.0) -> tuple[str, str]:
        assert self.wait(lambda: self.final is not None, timeout), self.statuses
        assert self.final is not None
        return self.final

    @property
    def states(self) -> list[str]:
        return [state for state, _ in self.statuses]

    @property
    def final(self) -> tuple[str, str] | None:
        finals = [s for s in self.statuses if s[0] in ("ended", "failed")]
        return finals[-1] if finals else None


@pytest.fixture
def server() -> Iterator[MjpegTestServer]:
    srv = MjpegTestServer()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def run_source() -> Iterator[Callable[..., tuple[MjpegSource, Recorder]]]:
    started: list[MjpegSource] = []

    def run(url: str, reconnects: bool = False, **kwargs: float) -> tuple[MjpegSource, Recorder]:
        source = MjpegSource(url, **kwargs)
        source.reconnects = reconnects  # parsing tests want the end of the server's stream to end the source
        recorder = Recorder()
        started.append(source)
        source.start(recorder.on_frame, recorder.on_status)
        return source, recorder

    yield run
    for source in started:
        source.stop(timeout=5)
        assert not source.running


def check_frames(frames: list[Frame], shape: tuple[int, int, int]) -> None:
    assert frames
    for frame in frames:
        assert frame.image.shape == shape and frame.image.dtype == np.uint8
    assert [f.index for f in frames] == list(range(len(frames)))
    assert frames[0].media_time == 0.0
    assert all(b.media_time > a.media_time for a, b in itertools.pairwise(frames))
    assert all(b.wall_time >= a.wall_time for a, b in itertools.pairwise(frames))


def stream_route(
    count: int,
    *,
    content_type: str = 'multipart/x-mixed-replace; boundary="--myboundary"',
    delimiter: bytes = b"--myboundary",
    interval: float = 0.02,
    hold: bool = True,
    seed: int = 1,
) -> Callable[[Handler], None]:
    """Paced ``frame_jpeg(k)`` (k = 0..count-1) in odd split sizes, no Content-Length; then hold or close."""
    jpegs = [frame_jpeg(k) for k in range(count)]

    def route(handler: Handler) -> None:
        rng = random.Random(seed)
        handler.start_stream(content_type)
        for jpeg in jpegs:
            handler.write_split(multipart([jpeg], delimiter), rng)
            if handler.closing.wait(interval):  # pacing like a camera, and quick exit at teardown
                return
        if hold:
            handler.closing.wait(30)

    return route


# -- source against a Python server ------------------------------------------------------------------


def test_source_streams_frames_from_python_server(server: MjpegTestServer, run_source) -> None:
    server.routes["/video.mjpg"] = stream_route(200)
    source, rec = run_source(server.url("/video.mjpg"))
    rec.wait_frames(8)
    assert rec.states[:2] == ["connecting", "live"]
    assert rec.statuses[1] == ("live", "64x48")
    with rec.cond:
        frames = list(rec.frames)
    check_frames(frames, (48, 64, 3))
    ids = [frame_id(f.image) for f in frames]
    assert ids == sorted(set(ids)), ids  # newest-only may skip, never reorders or repeats
    pixel = frames[0].image[0, 0]
    assert pixel[2] > pixel[0], "frames must be RGB"  # blue = 251, red = 4 for frame 0
    assert source.kind == "mjpeg" and source.live
    source.stop()
    assert not source.running
    assert rec.final == ("ended", "stopped")


def test_a_camera_that_hangs_up_is_reconnected_and_its_timeline_goes_on(server: MjpegTestServer, run_source) -> None:
    server.routes["/s"] = stream_route(5, interval=0.0, hold=False)  # five frames, then the camera hangs up
    source, rec = run_source(server.url("/s"), reconnects=True)
    assert rec.wait(lambda: rec.states.count("live") >= 2, timeout=15), rec.statuses  # back after the retry

    # The reader hands on only the newest frame of each read, so which frames arrive varies; what does
    # not: the first connection's last frame is 4, and then the ids start again (a fresh connection).
    def ids() -> list[int]:
        return [frame_id(f.image) for f in rec.frames]

    assert rec.wait(lambda: any(b < a for a, b in itertools.pairwise(ids()))), ids()
    reconnecting = [detail for state, detail in rec.statuses if state == "reconnecting"]
    assert reconnecting and reconnecting[0].startswith("the stream ended; retry 1 in ")
    restart = next(i for i, (a, b) in enumerate(itertools.pairwise(ids()), 1) if b < a)
    assert ids()[restart - 1] == 4, ids()
    times = [f.media_time for f in rec.frames]
    assert times == sorted(times)  # media time never runs backwards across the reconnect
    source.stop()
    assert rec.wait_final() == ("ended", "stopped")
    assert source.corrupt == 0


def test_newest_frame_only_when_a_read_holds_several(server: MjpegTestServer, run_source) -> None:
    jpegs = [frame_jpeg(k) for k in range(10)]
    head = b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=frame\r\n\r\n"

    def burst(handler: Handler) -> None:
        handler.wfile.write(head + multipart(jpegs))  # one write: the client reads it in one go
        handler.wfile.flush()

    server.routes["/burst"] = burst
    source, rec = run_source(server.url("/burst"))
    rec.wait_final()
    assert frame_id(rec.frames[-1].image) == 9
    assert source.dropped + len(rec.frames) == 10
    assert source.dropped >= 1


def test_octet_stream_like_ffmpeg_is_scanned(server: MjpegTestServer, run_source) -> None:
    server.routes["/o"] = stream_route(50, content_type="application/octet-stream", delimiter=b"--ffmpeg")
    source, rec = run_source(server.url("/o"))
    rec.wait_frames(3)
    assert source.parser is not None and source.parser.mode == "scan"


def test_stop_is_prompt_even_when_the_camera_stalls(server: MjpegTestServer, run_source) -> None:
    server.routes["/stall"] = stream_route(1, interval=0.0, hold=True)
    source, rec = run_source(server.url("/stall"), read_timeout=60.0)
    rec.wait_frames(1)
    started = time.monotonic()
    source.stop(timeout=5)
    assert time.monotonic() - started < 2.0
    assert not source.running
    assert rec.final == ("ended", "stopped")


def test_read_timeout_is_a_clear_error(server: MjpegTestServer, run_source) -> None:
    def silent(handler: Handler) -> None:
        handler.start_stream("multipart/x-mixed-replace;boundary=x")
        handler.closing.wait(30)

    server.routes["/silent"] = silent
    source, rec = run_source(server.url("/silent"), read_timeout=0.5)
    state, detail = rec.wait_final()
    assert state == "failed"
    assert detail == f"{source.display_name} sent nothing for 0.5 s — the camera stopped streaming"


def test_corrupt_frames_are_skipped(server: MjpegTestServer, run_source) -> None:
    bad = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64 + b"\xff\xd9"
    parts = [bad, bad, bad] + [frame_jpeg(k) for k in range(5)]

    def route(handler: Handler) -> None:
        handler.start_stream("multipart/x-mixed-replace;boundary=b")
        handler.write_split(multipart(parts, b"--b"), random.Random(3))

    server.routes["/c"] = route
    source, rec = run_source(server.url("/c"))
    assert rec.wait_final() == ("ended", "end of stream")
    # Every part is a frame, a corrupt one, or one skipped because a newer one came in the same read.
    assert len(rec.frames) + source.corrupt + source.dropped == len(parts)
    assert frame_id(rec.frames[-1].image) == 4


def test_all_corrupt_frames_fail(server: MjpegTestServer, run_source) -> None:
    bad = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64 + b"\xff\xd9"

    def route(handler: Handler) -> None:
        handler.start_stream("multipart/x-mixed-replace;boundary=b")
        for _ in range(60):
            handler.wfile.write(multipart([bad], b"--b"))
            handler.wfile.flush()
        handler.closing.wait(30)

    server.routes["/bad"] = route
    source, rec = run_source(server.url("/bad"))
    state, detail = rec.wait_final()
    assert state == "failed"
    assert detail.startswith(f"{source.display_name} sends no decodable JPEG frames")
    assert source.corrupt >= 50


def test_non_jpeg_parts_fail(server: MjpegTestServer, run_source) -> None:
    def route(handler: Handler) -> None:
        handler.start_stream("multipart/x-mixed-replace;boundary=b")
        handler.wfile.write(multipart([b"\x89PNG\r\n\x1a\n" + b"\x00" * 40] * 60, b"--b") + b"--b\r\n")
        handler.wfile.flush()
        handler.closing.wait(30)

    server.routes["/png"] = route
    _, rec = run_source(server.url("/png"))
    state, detail = rec.wait_final()
    assert state == "failed" and "sends no decodable JPEG frames" in detail


@pytest.mark.parametrize(
    ("status", "content_type", "expected"),
    [
        (404, "text/html", "HTTP 404 from {url}: there is no stream at this path; check the URL's path"),
        (403, "text/plain", "HTTP 403 from {url}: access is forbidden; check the user's rights on the camera"),
        (
            401,
            "text/html",
            "HTTP 401 from {url}: the camera needs credentials; put them in the URL as http://user:pass@host/…",
        ),
        (503, "text/plain", "HTTP 503 from {url}: the camera or server failed; try again or restart it"),
        (
            200,
            "text/html; charset=utf-8",
            "{url} is a web page (text/html), not an MJPEG stream; use the address of the video stream itself",
        ),
        (
            200,
            "image/jpeg",
            "{url} sent a single JPEG snapshot (image/jpeg), not an MJPEG stream; use the camera's MJPEG URL",
        ),
        (200, "video/mp4", "{url} sent video/mp4, not an MJPEG stream (multipart/x-mixed-replace)"),
    ],
)
def test_http_errors_are_one_clear_line(
    server: MjpegTestServer, run_source, status: int, content_type: str, expected: str
) -> None:
    server.routes["/x"] = lambda h: h.reply(status, content_type, b"<html>nope</html>")
    url = server.url("/x")
    _, rec = run_source(url)
    assert rec.wait_final() == ("failed", expected.format(url=url))
    assert rec.states == ["connecting", "failed"]


def test_credentials_are_used_and_never_shown(server: MjpegTestServer, run_source) -> None:
    stream = stream_route(100)

    def route(handler: Handler) -> None:
        expected = "Basic " + base64.b64encode(b"admin:s3cr3t!").decode()
        if handler.headers.get("Authorization") != expected:
            handler.reply(401, "text/plain", b"auth", {"WWW-Authenticate": 'Basic realm="cam"'})
            return
        stream(handler)

    server.routes["/auth"] = route
    source, rec = run_source(server.url("/auth", "admin:s3cr3t!"))
    rec.wait_frames(2)
    assert source.display_name == f"http://***@127.0.0.1:{server.port}/auth"
    assert all("s3cr3t" not in detail and "admin" not in detail for _, detail in rec.statuses)
    assert "s3cr3t" not in rec.frames[0].source_id

    _, rec = run_source(server.url("/auth"))
    assert "needs credentials" in rec.wait_final()[1]
    source, rec = run_source(server.url("/auth", "admin:wrong-pass"))
    state, detail = rec.wait_final()
    assert state == "failed" and "rejected the user name or password" in detail and "wrong-pass" not in detail


def test_mask_url() -> None:
    assert mask_url("http://u:p@cam.local:8080/video?x=1") == "http://***@cam.local:8080/video?x=1"
    assert mask_url("http://cam/videostream.cgi?user=admin&pwd=secret&rate=0") == (
        "http://cam/videostream.cgi?user=***&pwd=***&rate=0"
    )
    assert mask_url("http://cam/mjpg") == "http://cam/mjpg"


# -- source: connection errors ---------------------------------------------------------------------


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connecting to it is refused, and nobody else can take it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_connection_refused(closed_port: int, run_source) -> None:
    url = f"http://user:hunter2@127.0.0.1:{closed_port}/video"
    _, rec = run_source(url, connect_timeout=2.0)
    state, detail = rec.wait_final()
    assert state == "failed"
    assert detail == (
        f"cannot connect to http://***@127.0.0.1:{closed_port}/video: connection refused"
        " — is the camera on and the address right?"
    )
    assert rec.statuses[0] == ("connecting", f"http://***@127.0.0.1:{closed_port}/video")


def test_unknown_host(monkeypatch: pytest.MonkeyPatch, run_source) -> None:
    def no_dns(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)  # no network here: simulate a failing resolver
    _, rec = run_source("http://no-such-camera.invalid/video")
    assert rec.wait_final() == (
        "failed",
        "cannot connect to http://no-such-camera.invalid/video: the host name 'no-such-camera.invalid'"
        " does not resolve — check the address",
    )


def test_not_an_http_url(run_source) -> None:
    _, rec = run_source("rtsp://cam/stream")
    assert rec.wait_final() == (
        "failed",
        "rtsp://cam/stream is not an http:// or https:// URL, which an MJPEG source needs",
    )


# -- source against FFmpeg's own MJPEG server ------------------------------------------------------

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


@pytest.fixture
def ffmpeg_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FfmpegServer]:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs /proc/net/tcp to see when ffmpeg listens")
    srv = FfmpegServer(tmp_path / "ffmpeg.log", content_type=getattr(request, "param", None))
    try:
        srv.wait_listening()
        yield srv
    finally:
        srv.close()


@needs_ffmpeg
@pytest.mark.parametrize(
    ("ffmpeg_server", "mode"),
    [(None, "scan"), ("multipart/x-mixed-replace;boundary=ffmpeg", "multipart")],
    indirect=["ffmpeg_server"],
    ids=["octet-stream", "multipart"],
)
def test_source_reads_ffmpeg_mpjpeg(ffmpeg_server: FfmpegServer, run_source, mode: str) -> None:
    source, rec = run_source(ffmpeg_server.url)
    rec.wait_frames(4)
    assert rec.states[:2] == ["connecting", "live"] and rec.statuses[1][1] == "320x240"
    with rec.cond:
        frames = list(rec.frames)
    check_frames(frames, (240, 320, 3))
    assert source.parser is not None and source.parser.mode == mode
    assert source.corrupt == 0
    source.stop()
    assert not source.running
    assert rec.final == ("ended", "stopped")
