"""MJPEG over HTTP (``multipart/x-mixed-replace``): the stream most IP cameras and webcam servers offer.

Real cameras bend the multipart rules in every possible way (quoted or dashed boundaries, missing
or wrong Content-Length, LF-only lines, noise between parts, a boundary parameter that does not
match the body), so the parser is written by hand and trusts nothing: it walks the JPEG marker
structure to find where a picture really ends, uses boundaries and Content-Length when they are
right, and falls back to scanning for JPEG markers when they are not.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np

from pipeline.errors import SourceError
from pipeline.frames import Frame
from pipeline.sources.base import Source
from pipeline.sources.guard import UrlGuard, http_transport
from pipeline.sources.urls import describe_http_error, describe_http_status, mask_url, scrub

log = logging.getLogger(__name__)

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
#: Every real JPEG starts with SOI followed by another marker; matching three bytes avoids false starts.
_SOI_MARKER = b"\xff\xd8\xff"
DEFAULT_MAX_BUFFER = 32 * 1024 * 1024
#: A part's header block larger than this is not a header block: resynchronise.
MAX_HEADER_BYTES = 16 * 1024
#: Consecutive undecodable (or non-JPEG) parts before a stream without a single frame is declared broken.
MAX_BAD_PARTS = 50

_WHITESPACE = b"\r\n \t"
_DELIMITER_END = b"\r\n \t-"
_BOUNDARY_RE = re.compile(r"""boundary\s*=\s*(?:"([^"]*)"|'([^']*)'|([^;,\s]+))""", re.IGNORECASE)

# Parser states.
_SEEK, _DELIMITER, _HEADERS, _BODY = range(4)
_BAD = -1


def parse_boundary(content_type: str | None) -> bytes | None:
    """The boundary token of a Content-Type, without quotes or leading dashes (cameras disagree on both)."""
    if not content_type:
        return None
    match = _BOUNDARY_RE.search(content_type)
    if match is None:
        return None
    value = next(group for group in match.groups() if group is not None)
    token = value.strip().lstrip("-")
    if not token:
        return None
    try:
        return token.encode("ascii")
    except UnicodeEncodeError:
        return None


class _JpegWalk:
    """Resumable walk over a JPEG's marker segments to find its real EOI.

    Scanning for the first ``FFD9`` is wrong: EXIF thumbnails carry their own EOI inside APP1.
    Walking segment lengths and entropy-coded data finds the true end without waiting for the
    next boundary, which saves a whole frame of latency on live streams.
    """

    __slots__ = ("entropy", "pos", "scanned")

    def __init__(self, start: int) -> None:
        self.pos = start + 2  # past SOI
        self.entropy = False
        self.scanned = False  # a picture has at least one scan; "SOI EOI" in noise is not a JPEG

    def advance(self, buf: bytearray) -> int | None:
        """End offset (exclusive) once the JPEG is complete, None to wait for data, ``_BAD`` if malformed."""
        n = len(buf)
        p = self.pos
        while True:
            if self.entropy:
                q = buf.find(0xFF, p)
                if q < 0:
                    self.pos = max(p, n)
                    return None
                if q + 1 >= n:
                    self.pos = q
                    return None
                marker = buf[q + 1]
                if marker == 0x00 or 0xD0 <= marker <= 0xD7:  # stuffed byte or restart marker
                    p = q + 2
                elif marker == 0xFF:  # fill byte before a marker
                    p = q + 1
                else:
                    self.entropy = False
                    p = q
                continue
            if p + 1 >= n:
                self.pos = p
                return None
            if buf[p] != 0xFF:
                return _BAD
            marker = buf[p + 1]
            if marker == 0xFF:
                p += 1
            elif marker == 0xD9:
                return p + 2 if self.scanned else _BAD
            elif marker in (0x00, 0xD8):
                return _BAD
            elif 0xD0 <= marker <= 0xD7 or marker == 0x01:
                p += 2
            else:
                if p + 3 >= n:
                    self.pos = p
                    return None
                length = (buf[p + 2] << 8) | buf[p + 3]
                if length < 2:
                    return _BAD
                p += 2 + length
                if marker == 0xDA:  # start of scan: entropy-coded data follows the header
                    self.entropy = self.scanned = True


class MjpegParser:
    """Incremental parser for ``multipart/x-mixed-replace`` JPEG streams; ``feed`` returns finished JPEGs.

    With a boundary it splits on boundaries (using Content-Length when it checks out); without one,
    or when the declared boundary never shows up, it scans for JPEG SOI..EOI structure instead.
    The buffer is bounded by ``max_buffer`` so a stream of garbage cannot exhaust memory.
    """

    def __init__(self, content_type: str | None = None, *, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        self.boundary = parse_boundary(content_type)
        self._delimiter = b"--" + self.boundary if self.boundary else b""
        self.max_buffer = max(int(max_buffer), 1024)
        self._buf = bytearray()
        self._scan_mode = self.boundary is None
        self._seen_delimiter = False
        self._state = _SEEK
        self._walk: _JpegWalk | None = None
        self._walk_start = 0
        self._walk_failed = False
        self._search_from = 0
        self._pos = 0
        self._header_lines = 0
        self._body = 0
        self._content_length: int | None = None
        #: JPEG payloads returned so far.
        self.parts = 0
        #: Parts dropped because they did not start with a JPEG SOI marker.
        self.rejected = 0
        #: Times the parser threw data away to find its footing again.
        self.resyncs = 0
        #: Bytes thrown away (noise between parts, overflowing parts).
        self.discarded = 0

    @property
    def mode(self) -> str:
        """``multipart`` while splitting on boundaries, ``scan`` while scanning for JPEG markers."""
        return "scan" if self._scan_mode else "multipart"

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a part (never more than ``max_buffer`` after a feed)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes from the stream; return the JPEG payloads they complete, oldest first."""
        out: list[bytes] = []
        if data:
            self._buf += data
        while self._step(out):
            pass
        if len(self._buf) > self.max_buffer:
            log.debug("mjpeg: %d bytes without a complete part; discarding and resynchronising", len(self._buf))
            self.discarded += len(self._buf)
            self.resyncs += 1
            self._buf.clear()
            self._reset(_SEEK)
        return out

    # -- internals -------------------------------------------------------------------------------

    def _reset(self, state: int) -> None:
        self._state = state
        self._walk = None
        self._walk_failed = False
        self._search_from = 0
        self._content_length = None

    def _consume(self, n: int, *, garbage: bool = False) -> None:
        if n <= 0:
            return
        if garbage:
            self.discarded += n
        del self._buf[:n]
        self._search_from = 0

    def _emit(self, out: list[bytes], payload: bytes | bytearray) -> None:
        if payload[:2] != SOI:
            self.rejected += 1
            return
        out.append(bytes(payload))
        self.parts += 1

    def _find_delimiter(self, start: int) -> tuple[int, bool]:
        """(index, confirmed) of the next delimiter; (-1, False) if none. Unconfirmed: at the very end."""
        buf, delimiter = self._buf, self._delimiter
        while True:
            p = buf.find(delimiter, start)
            if p < 0:
                return -1, False
            after = p + len(delimiter)
            if after >= len(buf):
                return p, False
            if buf[after] in _DELIMITER_END:
                return p, True
            start = p + 1  # "--frame" inside "--frameXYZ" is not our delimiter

    def _step(self, out: list[bytes]) -> bool:
        """Advance the state machine once; True if it made progress and should run again."""
        if self._scan_mode:
            return self._step_scan(out)
        if self._state == _SEEK:
            return self._step_seek(out)
        if self._state == _DELIMITER:
            return self._step_delimiter()
        if self._state == _HEADERS:
            return self._step_headers()
        return self._step_body(out)

    def _step_scan(self, out: list[bytes]) -> bool:
        buf = self._buf
        if self._walk is None:
            start = buf.find(_SOI_MARKER, self._search_from)
            if start < 0:
                keep = min(len(buf), len(_SOI_MARKER) - 1)
                self._consume(len(buf) - keep, garbage=True)
                self._search_from = 0
                return False
            self._consume(start, garbage=True)
            self._walk = _JpegWalk(0)
        end = self._walk.advance(buf)
        if end is None:
            return False
        self._walk = None
        if end == _BAD:
            self.resyncs += 1
            self._consume(2, garbage=True)
            return True
        self._emit(out, buf[:end])
        self._consume(end)
        return True

    def _step_seek(self, out: list[bytes]) -> bool:
        buf, size = self._buf, len(self._delimiter)
        p, confirmed = self._find_delimiter(self._search_from)
        if confirmed:
            self._seen_delimiter = True
            self._consume(p, garbage=True)
            self._reset(_DELIMITER)
            return True
        if self._seen_delimiter or self._walk is None:
            # Noise between parts; keep only what may be the start of a delimiter.
            start = -1 if self._seen_delimiter else buf.find(_SOI_MARKER, 0, p if p >= 0 else len(buf))
            if start < 0:
                self._consume(p if p >= 0 else len(buf) - size, garbage=True)
                self._search_from = max(0, len(buf) - size)
                return False
            # No delimiter seen yet but a JPEG starts: if it completes first, the declared boundary is wrong.
            self._consume(start, garbage=True)
            self._walk = _JpegWalk(0)
        self._search_from = max(0, len(buf) - size)
        end = self._walk.advance(buf)
        if end is None:
            return False
        self._walk = None
        if end == _BAD:
            self._consume(2, garbage=True)
            return True
        log.info("mjpeg: the stream does not use boundary %r; scanning for JPEG markers instead", self.boundary)
        self._scan_mode = True
        self._emit(out, buf[:end])
        self._consume(end)
        self._reset(_SEEK)
        return True

    def _resync_at_delimiter(self) -> bool:
        """A 'delimiter' whose part makes no sense: skip past it and look for the next one."""
        self.resyncs += 1
        self._consume(len(self._delimiter), garbage=True)
        self._reset(_SEEK)
        return True

    def _step_delimiter(self) -> bool:
        buf, size = self._buf, len(self._delimiter)
        lf = buf.find(b"\n", size)
        if lf < 0:
            return self._resync_at_delimiter() if len(buf) > MAX_HEADER_BYTES else False
        if bytes(buf[size:lf]).strip().startswith(b"--"):  # close delimiter; some servers carry on anyway
            self._consume(lf + 1)
            self._reset(_SEEK)
            return True
        self._pos = lf + 1
        self._content_length = None
        self._header_lines = 0
        self._state = _HEADERS
        return True

    def _step_headers(self) -> bool:
        buf = self._buf
        while True:
            p = self._pos
            if len(buf) < p + 2:
                return self._resync_at_delimiter() if len(buf) > MAX_HEADER_BYTES else False
            if buf[p : p + 2] == SOI:  # no blank line: the picture starts right after the headers
                self._enter_body(p)
                return True
            lf = buf.find(b"\n", p)
            if lf < 0 or lf > MAX_HEADER_BYTES:
                return self._resync_at_delimiter() if len(buf) > MAX_HEADER_BYTES else False
            line = bytes(buf[p:lf])
            self._pos = lf + 1
            if not line.strip():
                if self._header_lines:
                    self._enter_body(lf + 1)
                    return True
                continue  # stray blank line before the headers; a JPEG right after it is caught above
            self._header_lines += 1
            name, sep, value = line.partition(b":")
            if sep and name.strip().lower() == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    length = 0
                self._content_length = length if 0 < length <= self.max_buffer else None

    def _enter_body(self, start: int) -> None:
        self._body = start
        self._search_from = start
        self._walk = None
        self._walk_failed = False
        self._state = _BODY

    def _step_body(self, out: list[bytes]) -> bool:
        """End the part by (1) a Content-Length that frames a whole JPEG, (2) the JPEG's own structure,
        (3) a Content-Length followed by a boundary, or (4) the next boundary, in that order."""
        buf, delimiter, body = self._buf, self._delimiter, self._body
        length = self._content_length
        end = body + length if length is not None else 0
        if length is not None and len(buf) >= end and buf[body : body + 2] == SOI and buf[end - 2 : end] == EOI:
            return self._finish(out, body, end, end, _SEEK)  # plainly a whole JPEG
        if self._walk is None and not self._walk_failed:
            start = body
            while start < len(buf) and buf[start] in _WHITESPACE:  # CRLF noise before the picture
                start += 1
            if start + 2 > len(buf):
                return False
            if buf[start : start + 2] == SOI:
                self._walk = _JpegWalk(start)
                self._walk_start = start
            else:
                self._walk_failed = True
        if self._walk is not None:
            walk_end = self._walk.advance(buf)
            if walk_end is not None and walk_end != _BAD:
                return self._finish(out, self._walk_start, walk_end, walk_end, _SEEK)
            if walk_end == _BAD:
                self._walk = None
                self._walk_failed = True
        if length is not None:
            if len(buf) < end:
                return False
            q = end
            while q < len(buf) and buf[q] in _WHITESPACE:
                q += 1
            following = bytes(buf[q : q + len(delimiter)])
            if following == delimiter:
                return self._finish(out, body, end, end, _SEEK)
            if len(following) < len(delimiter) and delimiter.startswith(following):
                return False  # cannot tell yet
            log.debug("mjpeg: Content-Length %d does not end at a boundary; searching", length)
            self._content_length = None
        p, confirmed = self._find_delimiter(max(self._search_from, body))
        if not confirmed:
            self._search_from = p if p >= 0 else max(body, len(buf) - len(delimiter))
            return False
        start, stop = body, p
        while stop > start and buf[stop - 1] == 0x2D:  # '-': a body line of "----token" for header "--token"
            stop -= 1
        while stop > start and buf[stop - 1] in _WHITESPACE:
            stop -= 1
        while start < stop and buf[start] in _WHITESPACE:
            start += 1
        return self._finish(out, start, stop, p, _DELIMITER)

    def _finish(self, out: list[bytes], start: int, stop: int, consumed: int, state: int) -> bool:
        self._emit(out, self._buf[start:stop])
        self._consume(consumed)
        self._reset(state)
        return True


def _decode(payload: bytes) -> np.ndarray | None:
    image = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.size == 0:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class MjpegSource(Source):
    """Reads an MJPEG-over-HTTP stream, handing on only the newest picture of each network read."""

    reconnects = True

    kind = "mjpeg"
    live = True

    def __init__(
        self,
        uri: str,
        source_id: str | None = None,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 10.0,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        guard: UrlGuard | None = None,
    ) -> None:
        super().__init__(uri, source_id or mask_url(uri))
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_buffer = max_buffer
        self.guard = guard  # a shared app's: each connection (redirects too) goes only where it allows
        #: Decodable JPEGs skipped because a newer one arrived in the same read.
        self.dropped = 0
        #: JPEG parts that failed to decode.
        self.corrupt = 0
        self.parser: MjpegParser | None = None
        self._sock_lock = threading.Lock()
        self._sock: socket.socket | None = None

    @property
    def display_name(self) -> str:
        """The URL without credentials, so messages and logs never leak them."""
        return mask_url(self.uri)

    def stop(self, timeout: float = 5.0) -> None:
        """Also shut the socket down, so a stalled camera cannot hold the reader for a whole read timeout."""
        self._stop.set()
        with self._sock_lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        super().stop(timeout)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Connect, check that an MJPEG stream came back, and yield decoded frames until it ends."""
        name = self.display_name
        scheme = urlsplit(self.uri).scheme.lower() if "://" in self.uri else ""
        if scheme not in ("http", "https"):
            raise SourceError(f"{name} is not an http:// or https:// URL, which an MJPEG source needs")
        if stop.is_set():
            return
        timeout = httpx.Timeout(self.read_timeout, connect=self.connect_timeout)
        headers = {"Accept": "multipart/x-mixed-replace, */*;q=0.5", "User-Agent": "onlooker-mjpeg/0.1"}
        try:
            with (
                httpx.Client(
                    timeout=timeout, follow_redirects=True, headers=headers, transport=http_transport(self.guard)
                ) as client,
                client.stream("GET", self.uri) as response,
            ):
                self._check_response(response)
                yield from self._read(response, stop)
        except httpx.InvalidURL as exc:
            raise SourceError(f"{name} is not a valid URL: {scrub(str(exc), self.uri)}") from exc
        except httpx.HTTPError as exc:
            if stop.is_set():
                return
            raise SourceError(describe_http_error(exc, self.uri, self.connect_timeout, self.read_timeout)) from exc
        except OSError as exc:  # a socket error httpx did not wrap (e.g. after our own shutdown)
            if stop.is_set():
                return
            raise SourceError(f"connection to {name} failed: {scrub(str(exc), self.uri)}") from exc

    def _check_response(self, response: httpx.Response) -> None:
        name, status = self.display_name, response.status_code
        if not 200 <= status < 300:
            url = response.request.url
            raise SourceError(describe_http_status(status, self.uri, bool(url.username or url.password)))
        content_type = response.headers.get("content-type", "")
        media = content_type.split(";", 1)[0].strip().lower()
        if media.startswith("multipart/"):
            return
        if media in ("", "application/octet-stream"):
            # FFmpeg's HTTP server and some cameras send this; the parser scans for JPEGs then.
            log.info("mjpeg: %s sent Content-Type %r; scanning for JPEG frames", name, media or "(none)")
            return
        if media in ("text/html", "application/xhtml+xml"):
            raise SourceError(
                f"{name} is a web page (text/html), not an MJPEG stream; use the address of the video stream itself"
            )
        if media == "image/jpeg":
            raise SourceError(
                f"{name} sent a single JPEG snapshot (image/jpeg), not an MJPEG stream; use the camera's MJPEG URL"
            )
        raise SourceError(f"{name} sent {media}, not an MJPEG stream (multipart/x-mixed-replace)")

    def _read(self, response: httpx.Response, stop: threading.Event) -> Iterator[Frame]:
        name = self.display_name
        parser = MjpegParser(response.headers.get("content-type"), max_buffer=self.max_buffer)
        self.parser = parser
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        with self._sock_lock:
            self._sock = sock if isinstance(sock, socket.socket) else None
        try:
            if stop.is_set():
                return
            start: float | None = None
            index = 0
            bad = 0  # undecodable parts before the first good frame
            # httpx's read timeout only catches silence; a server trickling bytes without ever finishing a
            # part (a crawling link, a hostile server) is caught by this deadline for the next whole part.
            due = time.monotonic() + self.read_timeout
            for chunk in response.iter_raw():
                payloads = parser.feed(chunk)
                if stop.is_set():
                    return
                image = None
                for k in range(len(payloads) - 1, -1, -1):  # newest first; older ones are stale
                    image = _decode(payloads[k])
                    if image is not None:
                        self.dropped += k
                        break
                    self.corrupt += 1
                    bad += 1
                now = time.monotonic()
                if payloads:
                    due = now + self.read_timeout
                elif now > due:
                    raise SourceError(
                        f"{name} sent bytes but no whole frame for {self.read_timeout:g} s — the camera or the "
                        "network is far too slow, or this is not an MJPEG stream"
                    )
                if image is None:
                    if index == 0 and bad + parser.rejected >= MAX_BAD_PARTS:
                        raise SourceError(
                            f"{name} sends no decodable JPEG frames "
                            f"({bad} undecodable, {parser.rejected} not JPEG); is it really an MJPEG stream?"
                        )
                    continue
                if start is None:
                    start = now
                yield Frame(
                    image=image, media_time=now - start, wall_time=time.time(), index=index, source_id=self.source_id
                )
                index += 1
                if stop.is_set():
                    return
            if index == 0 and not stop.is_set():
                raise SourceError(f"{name} closed the connection before sending a single JPEG frame")
        finally:
            with self._sock_lock:
                self._sock = None
