"""MJPEG over HTTP, the hand-written multipart parser: real JPEGs (cv2.imencode) and the many ways cameras
bend the multipart format. The source against real loopback servers: ``tests/integration/test_mjpeg_source.py``.
"""

from __future__ import annotations

import string

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline.sources.mjpeg_parser import MjpegParser, parse_boundary
from tests.helpers.mjpeg_server import (
    make_jpeg,
    multipart,
)

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
