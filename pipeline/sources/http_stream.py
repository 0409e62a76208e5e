"""One streaming HTTP GET: sniffed once, then read on the same connection by the reader its body needs.

Many cameras (DroidCam's free app, cheap IP cameras, FFmpeg's ``-listen 1``) serve one client at a
time: while the first connection is open a second is refused, and some exit after their one client.
So the connection that found out what a URL serves is the one that streams it. Its socket belongs to
a ``Line`` that another thread can cut: Stop, or a deadline for the response headers that passed.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from pipeline.errors import SourceError
from pipeline.sources.base import Source
from pipeline.sources.guard import UrlGuard, http_transport
from pipeline.sources.urls import describe_http_error, mask_url, scrub

#: How a body starts when it is MJPEG with no multipart Content-Type (FFmpeg's server sends
#: application/octet-stream): a boundary line, or a bare JPEG.
_MJPEG_STARTS = (b"--", b"\xff\xd8")
#: Body bytes looked at, at most, to tell MJPEG from video when the Content-Type does not say.
_PEEK_BYTES = 64


class Line:
    """The socket of a source's current connection, so another thread can shut it down.

    Shutting a socket down wakes a read blocked on it at once. After ``hang_up`` (Stop) any later
    connection is shut down as soon as it is made, so a Stop during a connect cannot be missed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.hung_up = False

    def trace(self, event: str, info: dict) -> None:
        """httpx's ``trace`` extension: keep the socket of each new connection (redirect hops, TLS too)."""
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            with self._lock:
                self._sock = info["return_value"].get_extra_info("socket")
                if self.hung_up:
                    self._shutdown()

    def cut(self) -> None:
        """Shut the current connection down; its reader gets an error at once."""
        with self._lock:
            self._shutdown()

    def hang_up(self) -> None:
        """Cut the current connection and every later one (the source is stopping)."""
        with self._lock:
            self.hung_up = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):  # the raw socket's shutdown, also under a TLS wrapper
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)


class HeaderDeadline:
    """Cuts the line when the response headers (and the first body bytes looked at) have not all come
    within ``seconds``: httpx's timeouts only catch silence, so a server trickling its headers a few
    bytes at a time would otherwise hold Start for as long as it liked."""

    def __init__(self, seconds: float, line: Line) -> None:
        self.seconds = seconds
        self.expired = False
        self._line = line
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def _expire(self) -> None:
        self.expired = True  # set before the cut, so the read error it causes is explained by it
        self._line.cut()

    def __enter__(self) -> HeaderDeadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def body_kind(content_type: str, head: bytes) -> str:
    """``mjpeg``, ``page`` or ``video`` from the Content-Type, and where it does not say, the body's start."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media.startswith("multipart/x-mixed-replace"):
        return "mjpeg"
    if media in ("text/html", "application/xhtml+xml"):
        return "page"
    return "mjpeg" if head.lstrip(b"\r\n \t").startswith(_MJPEG_STARTS) else "video"


@dataclass
class HttpStream:
    """An open streaming response, what it carries (``kind``) and the body bytes already read to tell."""

    response: httpx.Response
    kind: str
    head: bytes
    rest: Iterator[bytes]

    def chunks(self) -> Iterator[bytes]:
        """The whole body as it arrives, the bytes read to sniff it first."""
        return itertools.chain((self.head,) if self.head else (), self.rest)


def _peek(response: httpx.Response) -> tuple[bytes, Iterator[bytes]]:
    """The first body bytes, where the Content-Type alone cannot tell MJPEG from video."""
    rest = response.iter_raw()
    media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if response.status_code >= 300 or body_kind(media, b"") != "video":
        return b"", rest
    head = b""
    for chunk in rest:
        head += chunk
        if len(head.lstrip(b"\r\n \t")) >= 2 or len(head) >= _PEEK_BYTES:
            break
    return head, rest


@contextlib.contextmanager
def open_stream(
    url: str,
    line: Line,
    *,
    connect_timeout: float,
    read_timeout: float,
    guard: UrlGuard | None = None,
    headers: dict[str, str] | None = None,
) -> Iterator[HttpStream]:
    """GET ``url`` as a stream on ``line``; every failure, while opening or reading, becomes one
    SourceError line, and none at all once the line was hung up (Stop: the reader just ends). The
    headers must all come within ``connect_timeout + read_timeout``; with a ``guard``, every
    connection (each redirect hop) must pass it."""
    deadline = HeaderDeadline(connect_timeout + read_timeout, line)
    timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
    opened_at_all = False
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=True, headers=headers, transport=http_transport(guard)) as c,
            contextlib.ExitStack() as responses,
        ):
            with deadline:
                response = responses.enter_context(c.stream("GET", url, extensions={"trace": line.trace}))
                head, rest = _peek(response)
            opened_at_all = True
            yield HttpStream(response, body_kind(response.headers.get("content-type", ""), head), head, rest)
    except httpx.InvalidURL as exc:
        raise SourceError(f"{mask_url(url)} is not a valid URL: {scrub(str(exc), url)}") from None
    except (httpx.HTTPError, OSError) as exc:  # OSError: a socket error httpx did not wrap (after a cut)
        if line.hung_up and opened_at_all:
            return  # Stop cut the stream: the reader just ends
        if line.hung_up:
            raise SourceError(f"{mask_url(url)}: stopped while connecting") from None
        if deadline.expired:
            raise SourceError(
                f"{mask_url(url)}: the server took over {deadline.seconds:g} s to answer and was still sending "
                "its headers; it is overloaded, on a very slow link, or not a camera"
            ) from None
        if isinstance(exc, httpx.HTTPError):
            raise SourceError(describe_http_error(exc, url, connect_timeout, read_timeout)) from None
        raise SourceError(f"connection to {mask_url(url)} failed: {scrub(str(exc), url)}") from None


class HttpSource(Source):
    """A source read over one HTTP connection at a time, on a ``line`` that Stop cuts at once, so a
    stalled camera cannot hold the reader for a whole read timeout."""

    reconnects = True

    def __init__(self, uri: str, source_id: str | None = None, guard: UrlGuard | None = None) -> None:
        super().__init__(uri, source_id or mask_url(uri))
        self.guard = guard  # a shared app's: each connection (redirects too) goes only where it allows
        self.line = Line()

    @property
    def display_name(self) -> str:
        """The URL without credentials, so messages and logs never leak them."""
        return mask_url(self.uri)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()  # first, so the reader takes the cut for Stop, not for a failure
        self.line.hang_up()
        super().stop(timeout)
