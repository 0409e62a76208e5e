"""The MJPEG parser: ``multipart/x-mixed-replace`` bytes in, whole JPEGs out; pure, no I/O.

Real cameras bend the multipart rules in every possible way (quoted or dashed boundaries, missing
or wrong Content-Length, LF-only lines, noise between parts, a boundary parameter that does not
match the body), so the parser is written by hand and trusts nothing: it walks the JPEG marker
structure to find where a picture really ends, uses boundaries and Content-Length when they are
right, and falls back to scanning for JPEG markers when they are not.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
#: Every real JPEG starts with SOI followed by another marker; matching three bytes avoids false starts.
_SOI_MARKER = b"\xff\xd8\xff"
DEFAULT_MAX_BUFFER = 32 * 1024 * 1024
#: A part's header block larger than this is not a header block: resynchronise.
MAX_HEADER_BYTES = 16 * 1024

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
