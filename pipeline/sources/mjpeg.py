"""MJPEG over HTTP (``multipart/x-mixed-replace``): the stream most IP cameras and webcam servers offer.

The bytes are split into JPEGs by ``mjpeg_parser`` (pure, no I/O); this module is the camera source:
the connection, the checks on what the camera answered, and decoding only the newest picture.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np

from pipeline.errors import SourceError
from pipeline.frames import Frame
from pipeline.sources.guard import UrlGuard
from pipeline.sources.http_stream import HttpSource, HttpStream, open_stream
from pipeline.sources.mjpeg_parser import DEFAULT_MAX_BUFFER, MjpegParser
from pipeline.sources.urls import describe_http_status

log = logging.getLogger(__name__)

#: Consecutive undecodable (or non-JPEG) parts before a stream without a single frame is declared broken.
MAX_BAD_PARTS = 50
HEADERS = {"Accept": "multipart/x-mixed-replace, */*;q=0.5", "User-Agent": "onlooker-mjpeg/0.1"}


def _decode(payload: bytes) -> np.ndarray | None:
    image = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.size == 0:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class MjpegSource(HttpSource):
    """Reads an MJPEG-over-HTTP stream, handing on only the newest picture of each network read."""

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
        super().__init__(uri, source_id, guard)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_buffer = max_buffer
        #: Decodable JPEGs skipped because a newer one arrived in the same read.
        self.dropped = 0
        #: JPEG parts that failed to decode.
        self.corrupt = 0
        self.parser: MjpegParser | None = None

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Connect, check that an MJPEG stream came back, and yield decoded frames until it ends."""
        scheme = urlsplit(self.uri).scheme.lower() if "://" in self.uri else ""
        if scheme not in ("http", "https"):
            raise SourceError(f"{self.display_name} is not an http:// or https:// URL, which an MJPEG source needs")
        if stop.is_set():
            return
        with open_stream(
            self.uri,
            self.line,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            guard=self.guard,
            headers=HEADERS,
        ) as stream:
            self._check_response(stream.response)
            yield from self.read(stream, stop)

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

    def read(self, stream: HttpStream, stop: threading.Event) -> Iterator[Frame]:
        """Frames from a response already open (this source's own, or one a URL was sniffed on)."""
        name = self.display_name
        parser = MjpegParser(stream.response.headers.get("content-type"), max_buffer=self.max_buffer)
        self.parser = parser
        if stop.is_set():
            return
        start: float | None = None
        index = 0
        bad = 0  # undecodable parts before the first good frame
        # httpx's read timeout only catches silence; a server trickling bytes without ever finishing a
        # part (a crawling link, a hostile server) is caught by this deadline for the next whole part.
        due = time.monotonic() + self.read_timeout
        for chunk in stream.chunks():
            payloads = parser.feed(chunk)
            if stop.is_set():
                return
            image, jpeg = None, b""
            for k in range(len(payloads) - 1, -1, -1):  # newest first; older ones are stale
                image = _decode(payloads[k])
                if image is not None:
                    self.dropped += k
                    jpeg = payloads[k]
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
            self.keep("jpeg", jpeg, now - start)  # the camera's own JPEG, kept as it came
            yield Frame(
                image=image, media_time=now - start, wall_time=time.time(), index=index, source_id=self.source_id
            )
            index += 1
            if stop.is_set():
                return
        if index == 0 and not stop.is_set():
            raise SourceError(f"{name} closed the connection before sending a single JPEG frame")
