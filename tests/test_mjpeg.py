"""MJPEG over HTTP: the hand-written multipart parser, and the source against real loopback servers.

Parser tests use real JPEGs (cv2.imencode) and the many ways cameras bend the multipart format;
source tests run a threaded Python server and FFmpeg's own ``-f mpjpeg -listen 1`` server.
"""

from __future__ import annotations

import base64
import itertools
import random
import shutil
import socket
import string
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from mjpeg_server import FfmpegServer, Handler, MjpegTestServer, frame_id, frame_jpeg, make_jpeg, multipart

from pipeline.frames import Frame
from pipeline.sources.mjpeg import MjpegSource
from pipeline.sources.mjpeg_parser import MjpegParser, parse_boundary
from pipeline.sources.urls import mask_url

SOI = b"\xff\xd8"


def _encode(image: np.ndarray, *params: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, list(params))
    assert ok
    return buf.tobytes()


def _with_thumbnail(jpeg: bytes, thumbnail: bytes) -> bytes:
    """A JPEG carrying a whole thumbnail JPEG (with its own EOI) in an APP15 segment, like EXIF does."""
    body = b"THUMB\x00" + thumbnail
    return jpeg[:2] + b"\xff\xef" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


_rng = np.random.default_rng(7)
_noise = _rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
_gradient = np.repeat(np.linspace(0, 255, 80, dtype=np.uint8)[None, :, None], 30, axis=0).repeat(3, axis=2)
POOL: list[bytes] = [
    make_jpeg(12),
    make_jpeg(200, 33, 17),
    _encode(_noise, cv2.IMWRITE_JPEG_QUALITY, 95),  # lots of 0xFF00 stuffing in the entropy data
    _encode(_gradient, cv2.IMWRITE_JPEG_QUALITY, 40),
    _encode(_noise, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),  # several scans
    _encode(_gradient, cv2.IMWRITE_JPEG_RST_INTERVAL, 2),  # restart markers
    _with_thumbnail(make_jpeg(100), make_jpeg(50, 8, 8)),
]


def feed_all(parser: MjpegParser, data: bytes, sizes: list[int] | None = None) -> list[bytes]:
    out: list[bytes] = []
    pos, k = 0, 0
    sizes = sizes or [len(data) or 1]
    while pos < len(data):
        size = sizes[k % len(sizes)]
        out += parser.feed(data[pos : pos + size])
        pos += size
        k += 1
    return out


# -- parser: boundary parameter ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ('multipart/x-mixed-replace; boundary="--myboundary"', b"myboundary"),
        ("multipart/x-mixed-replace;boundary=myboundary", b"myboundary"),
        ("multipart/x-mixed-replace; boundary=--myboundary", b"myboundary"),
        ('multipart/x-mixed-replace; boundary="myboundary"; charset=x', b"myboundary"),
        ("multipart/x-mixed-replace; BOUNDARY = 'frame'", b"frame"),
        ("multipart/x-mixed-replace;boundary=ffmpeg", b"ffmpeg"),
        ("multipart/x-mixed-replace", None),
        ('multipart/x-mixed-replace; boundary=""', None),
        ("multipart/x-mixed-replace; boundary=--", None),
        (None, None),
        ("", None),
    ],
)
def test_parse_boundary(content_type: str | None, expected: bytes | None) -> None:
    assert parse_boundary(content_type) == expected


# -- parser: robustness cases ---------------------------------------------------------------------


def test_whole_stream_in_one_feed() -> None:
    jpegs = POOL[:4]
    parser = MjpegParser('multipart/x-mixed-replace; boundary="frame"')
    assert parser.feed(multipart(jpegs)) == jpegs
    assert parser.mode == "multipart"


@pytest.mark.parametrize("content_length", [False, True])
def test_one_byte_feeds(content_length: bool) -> None:
    jpegs = POOL
    parser = MjpegParser("multipart/x-mixed-replace;boundary=frame")
    assert feed_all(parser, multipart(jpegs, content_length=content_length), [1]) == jpegs


def test_split_at_every_position() -> None:
    """Two reads, the split anywhere: inside the boundary, the headers, the SOI, the EOI."""
    jpegs = [POOL[0], POOL[1]]
    data = multipart(jpegs)
    for cut in range(1, len(data)):
        parser = MjpegParser("multipart/x-mixed-replace;boundary=frame")
        assert parser.feed(data[:cut]) + parser.feed(data[cut:]) == jpegs, cut


def test_part_is_returned_as_soon_as_it_is_complete() -> None:
    """A finished JPEG must not wait for the next boundary: that would add a frame of latency."""
    for content_length in (False, True):
        parser = MjpegParser("multipart/x-mixed-replace;boundary=frame")
        assert parser.feed(multipart([POOL[2]], content_length=content_length)) == [POOL[2]]
    parser = MjpegParser(None)
    assert parser.feed(POOL[2]) == [POOL[2]]


@pytest.mark.parametrize("error", [-7, +9, +5000])
def test_wrong_content_length_falls_back_to_boundary_search(error: int) -> None:
    jpegs = POOL[:3]
    data = b"".join(
        b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % (len(j) + error) + j + b"\r\n"
        for j in jpegs
    )
    parser = MjpegParser("multipart/x-mixed-replace;boundary=frame")
    assert feed_all(parser, data + b"--frame\r\n", [333]) == jpegs


def test_content_length_followed_by_noise_is_still_used() -> None:
    jpeg = POOL[2]
    data = b"--frame\r\nContent-Length: %d\r\n\r\n" % len(jpeg) + jpeg + b"\r\n\r\nnoise\r\n--frame\r\n"
    assert MjpegParser("multipart/x-mixed-replace;boundary=frame").feed(data) == [jpeg]


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [
        ('boundary="--myboundary"', b"--myboundary"),  # dashes in the header, body repeats them as is
        ('boundary="--myboundary"', b"----myboundary"),  # RFC-correct: "--" + boundary
        ("boundary=myboundary", b"--myboundary"),
        ("boundary=--myboundary", b"----myboundary"),
        ("boundary=myboundary", b"----myboundary"),
    ],
)
def test_boundary_dash_and_quote_styles(header: str, delimiter: bytes) -> None:
    jpegs = POOL[:3]
    parser = MjpegParser(f"multipart/x-mixed-replace; {header}")
    assert feed_all(parser, multipart(jpegs, delimiter), [1, 5, 64]) == jpegs
    assert parser.mode == "multipart"


def test_noise_between_parts() -> None:
    a, b, c = POOL[0], POOL[2], POOL[3]
    data = (
        b"preamble junk \x00\xff\r\n\r\n"
        + b"--frame\r\nContent-Type: image/jpeg\r\n\r\n"
        + a
        + b"\r\n\r\n\r\n\x00\x01garbage\xff\xd8 not a jpeg\r\n"
        + b"--frame\r\n\r\nContent-Type: image/jpeg\r\n\r\n\r\n"  # stray blank line before headers, CRLF after
        + b
        + b"\r\nXXXX--frame\r\nX-Timestamp: 123\r\n\r\n"
        + c
        + b"\r\n--frame--\r\n"
    )
    parser = MjpegParser('multipart/x-mixed-replace;boundary="frame"')
    assert feed_all(parser, data, [3, 1, 17]) == [a, b, c]
    assert parser.discarded > 0


def test_lf_only_line_endings() -> None:
    jpegs = POOL[:4]
    for content_length in (False, True):
        data = multipart(jpegs, content_length=content_length, eol=b"\n")
        assert feed_all(MjpegParser("multipart/x-mixed-replace;boundary=frame"), data, [1, 2, 300]) == jpegs


def test_parts_without_headers() -> None:
    jpegs = POOL[:3]
    data = b"".join(b"--frame\r\n" + j + b"\r\n" for j in jpegs)
    assert feed_all(MjpegParser("multipart/x-mixed-replace;boundary=frame"), data, [7]) == jpegs


@pytest.mark.parametrize(
    "content_type",
    [None, "multipart/x-mixed-replace", "multipart/x-mixed-replace;boundary=somethingelse", "application/octet-stream"],
)
def test_missing_or_wrong_boundary_scans_for_jpeg_markers(content_type: str | None) -> None:
    jpegs = POOL
    parser = MjpegParser(content_type)
    assert feed_all(parser, multipart(jpegs, b"--ffmpeg"), [1, 50, 4096]) == jpegs
    assert parser.mode == "scan"


def test_body_boundary_without_dashes_still_works_by_scanning() -> None:
    jpegs = POOL[:3]
    parser = MjpegParser("multipart/x-mixed-replace;boundary=frame")
    assert parser.feed(multipart(jpegs, b"frame")) == jpegs


def test_embedded_thumbnail_eoi_does_not_cut_the_picture() -> None:
    jpeg = POOL[-1]
    assert jpeg.count(b"\xff\xd9") == 2
    for content_type in (None, "multipart/x-mixed-replace;boundary=frame"):
        out = feed_all(MjpegParser(content_type), multipart([jpeg, POOL[0]]), [1])
        assert out == [jpeg, POOL[0]]
        assert cv2.imdecode(np.frombuffer(out[0], np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)


def test_non_jpeg_parts_are_dropped() -> None:
    data = multipart([b"hello, I am text", POOL[0], b"GIF89a....", POOL[1]])
    parser = MjpegParser("multipart/x-mixed-replace;boundary=frame")
    assert feed_all(parser, data + b"--frame\r\n", [11]) == [POOL[0], POOL[1]]
    assert parser.rejected == 2


def test_truncated_jpeg_is_delivered_and_the_next_part_is_intact() -> None:
    """Multipart mode hands over the cut picture (the decoder counts it corrupt) and stays in step."""
    cut = POOL[2][: len(POOL[2]) // 2]
    data = multipart([POOL[0], cut, POOL[1]])
    out = feed_all(MjpegParser("multipart/x-mixed-replace;boundary=frame"), data, [13])
    assert out == [POOL[0], cut, POOL[1]]
    out = feed_all(MjpegParser(None), data, [13])  # scan mode skips the broken one
    assert out == [POOL[0], POOL[1]]


def test_runaway_part_is_discarded_and_parser_resyncs() -> None:
    limit = 64 * 1024
    parser = MjpegParser("multipart/x-mixed-replace;boundary=frame", max_buffer=limit)
    out = parser.feed(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n" + SOI)
    for _ in range(40):
        out += parser.feed(b"\x00" * 4096)  # a part that never ends
        assert parser.buffered <= limit
    assert parser.resyncs >= 1 and parser.discarded > limit
    out += parser.feed(multipart([POOL[0], POOL[1]]))
    assert out == [POOL[0], POOL[1]]


def test_default_buffer_bound_is_32_mib() -> None:
    parser = MjpegParser("multipart/x-mixed-replace;boundary=frame")
    parser.feed(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n")
    chunk = b"\x00" * (1 << 20)
    peak = 0
    for _ in range(34):
        parser.feed(chunk)
        peak = max(peak, parser.buffered)
    assert 31 << 20 <= peak <= 32 << 20
    assert parser.buffered < 32 << 20 and parser.resyncs == 1


# -- parser: properties ---------------------------------------------------------------------------

_TOKEN = st.text(alphabet=string.ascii_letters + string.digits + "_.=+-'()/:?", min_size=1, max_size=24)
_GARBAGE = st.one_of(
    st.just(b""),
    st.text(alphabet="\r\n \t", max_size=8).map(str.encode),
    st.binary(max_size=40),
    st.text(alphabet=string.printable, max_size=40).map(str.encode),
)


@st.composite
def mjpeg_streams(draw: st.DrawFn) -> tuple[str | None, bytes, list[bytes], list[int]]:
    """(Content-Type, body, expected payloads, read sizes) for a camera with random habits."""
    payloads = [POOL[i] for i in draw(st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=6))]
    token = draw(_TOKEN)
    core = token.lstrip("-")
    assume(core)
    mode = draw(st.sampled_from(["quoted", "plain", "dashed", "dashed-quoted", "spaced", "none", "wrong"]))
    content_type = {
        "quoted": f'multipart/x-mixed-replace; boundary="{token}"',
        "plain": f"multipart/x-mixed-replace;boundary={token}",
        "dashed": f"multipart/x-mixed-replace;boundary=--{token}",
        "dashed-quoted": f'multipart/x-mixed-replace; boundary="--{token}"',
        "spaced": f"multipart/x-mixed-replace ; boundary = {token} ; charset=binary",
        "none": draw(st.sampled_from([None, "multipart/x-mixed-replace", "application/octet-stream"])),
        "wrong": "multipart/x-mixed-replace;boundary=ZZnotTheBoundaryZZ",
    }[mode]
    scanning = mode in ("none", "wrong")
    delimiter = draw(st.sampled_from([b"--", b"----"])) + core.encode()
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    content_length = draw(st.booleans())
    body = bytearray(draw(_GARBAGE))
    for payload in payloads:
        body += delimiter + eol + b"Content-Type: image/jpeg" + eol
        if content_length:
            body += b"Content-Length: %d" % len(payload) + eol
        if draw(st.booleans()):
            body += b"X-Timestamp: 1700000000.123" + eol
        body += eol + payload + eol + draw(_GARBAGE)
    if draw(st.booleans()):
        body += delimiter + b"--" + eol
    data = bytes(body)
    seams = data
    for payload in payloads:
        seams = seams.replace(payload, b"|")
    # Garbage must not contain the boundary (for scanning streams: the JPEG SOI marker, their 'boundary').
    assume(b"--" + core.encode() not in seams if not scanning else SOI not in seams)
    assume(b"ZZnotTheBoundaryZZ" not in data)
    sizes = draw(st.lists(st.integers(1, 700), min_size=1, max_size=12))
    return content_type, data, payloads, sizes


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mjpeg_streams())
def test_property_parser_returns_exactly_the_payloads(stream: tuple[str | None, bytes, list[bytes], list[int]]) -> None:
    content_type, data, payloads, sizes = stream
    parser = MjpegParser(content_type)
    assert feed_all(parser, data, sizes) == payloads


_BLOCKS = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"--x\r\n",
            b"--x",
            b"--x--\r\n",
            b"\r\n",
            b"\n",
            b"Content-Length: 10\r\n",
            b"Content-Length: 99999999999\r\n",
            b"Content-Length: -3\r\n",
            b"Content-Type: image/jpeg\r\n\r\n",
            SOI,
            b"\xff\xd8\xff",
            b"\xff\xd9",
            b"\xff\xda\x00\x02",
            b"\xff\xe0\x00\x10",
            b"\xff\x00",
            b"\xff\xff\xff",
            POOL[0],
            POOL[2][:300],
            POOL[2][300:],
        ]
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    content_type=st.sampled_from(
        [None, "multipart/x-mixed-replace;boundary=x", 'multipart/x-mixed-replace;boundary="--x"']
    ),
    blocks=st.lists(_BLOCKS, max_size=40),
    sizes=st.lists(st.integers(1, 512), min_size=1, max_size=8),
)
def test_fuzz_parser_never_raises_and_stays_bounded(
    content_type: str | None, blocks: list[bytes], sizes: list[int]
) -> None:
    parser = MjpegParser(content_type, max_buffer=2048)
    data = b"".join(blocks)
    pos, k = 0, 0
    while pos < len(data):
        chunk = data[pos : pos + sizes[k % len(sizes)]]
        pos, k = pos + len(chunk), k + 1
        for payload in parser.feed(chunk):
            assert payload.startswith(SOI)
        assert parser.buffered <= parser.max_buffer


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=20000), st.sampled_from([None, "multipart/x-mixed-replace;boundary=\x00"]))
def test_fuzz_random_bytes(data: bytes, content_type: str | None) -> None:
    parser = MjpegParser(content_type, max_buffer=1024)
    for i in range(0, len(data), 97):
        parser.feed(data[i : i + 97])
        assert parser.buffered <= 1024


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
