"""Turn what a user typed into the right Source: file path, stream URL, MJPEG camera or web page.

HTTP URLs are sniffed by Content-Type (MJPEG cameras, HTML pages and plain video all use
http://); web pages such as YouTube are resolved to a media URL with yt-dlp when it is installed.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from pipeline.errors import SourceError
from pipeline.frames import Frame
from pipeline.sources.base import Source
from pipeline.sources.file import FileSource
from pipeline.sources.guard import UrlGuard, http_transport
from pipeline.sources.stream import STREAM_SCHEMES, StreamSource
from pipeline.sources.urls import describe_http_error, describe_http_status, mask_url, scrub

log = logging.getLogger(__name__)

PAGE_HOSTS = ("youtube.com", "youtu.be", "vimeo.com", "twitch.tv", "dailymotion.com", "facebook.com", "x.com")


class HeaderDeadline:
    """Shuts the connection down when the response headers have not all come within ``seconds``.

    httpx's timeouts only catch silence: a server that trickles its headers a few bytes at a time
    would hold Start for as long as it liked. Shutting the socket down wakes the blocked read.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def trace(self, event: str, info: dict) -> None:
        """httpx's ``trace`` extension: keep the socket of each new connection (redirect hops too)."""
        if event == "connection.connect_tcp.complete":
            with self._lock:
                self._sock = info["return_value"].get_extra_info("socket")

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> HeaderDeadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def sniff_http(url: str, timeout: float = 10.0, guard: UrlGuard | None = None) -> str:
    """Classify an http(s) URL as ``mjpeg``, ``page`` or ``video`` from its response headers, which must
    all come within twice ``timeout``; with a ``guard``, every connection (each redirect hop) must pass it."""
    host = (urlsplit(url).hostname or "").lower()
    if any(host == h or host.endswith("." + h) for h in PAGE_HOSTS):
        return "page"
    deadline = HeaderDeadline(2 * timeout)
    try:
        with (
            deadline,
            httpx.Client(timeout=timeout, follow_redirects=True, transport=http_transport(guard)) as client,
            client.stream("GET", url, extensions={"trace": deadline.trace}) as response,
        ):
            if response.status_code >= 400:
                raise SourceError(describe_http_status(response.status_code, url, bool(response.request.url.username)))
            content_type = response.headers.get("content-type", "").lower()
    except httpx.HTTPError as exc:
        if deadline.expired:
            raise SourceError(
                f"{mask_url(url)}: the server took over {deadline.seconds:g} s to answer and was still sending its "
                "headers; it is overloaded, on a very slow link, or not a camera"
            ) from None
        raise SourceError(describe_http_error(exc, url, timeout, timeout)) from None
    if content_type.startswith("multipart/x-mixed-replace"):
        return "mjpeg"
    if content_type.startswith(("text/html", "application/xhtml")):
        return "page"
    return "video"


def resolve_page(url: str, guard: UrlGuard | None = None) -> str:
    """The direct media URL behind a web page, via yt-dlp; a clear error when that cannot work.

    On a shared app (an exposed ``guard``) only yt-dlp's site extractors run, not its generic one, which
    would fetch whatever a visitor's page points at; the media URL found is checked like a typed one.
    """
    display = mask_url(url)
    try:
        import yt_dlp
    except ImportError:
        raise SourceError(
            f"{display}: is a web page, not a video stream; install yt-dlp (pip install yt-dlp) to play "
            "pages such as YouTube, or paste the direct video/stream URL"
        ) from None
    options = {"quiet": True, "no_warnings": True, "noplaylist": True, "format": "best[vcodec!=none]/best"}
    options["logger"] = log  # its errors become the SourceError below, not lines on stderr
    shared = guard is not None and guard.exposed
    if shared:
        options["allowed_extractors"] = ["default", "-generic"]
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(url, download=False)
    except Exception as exc:  # yt-dlp raises many types; all mean "no video here"
        reason = scrub(" ".join(str(exc).split()).removeprefix("ERROR: "), url)
        hint = "; a shared app plays only pages of sites yt-dlp knows" if shared else ""
        raise SourceError(f"{display}: is a web page with no video yt-dlp can find ({reason[:160]}){hint}") from None
    media = (info or {}).get("url")
    if not media:
        raise SourceError(f"{display}: yt-dlp found no single playable video on this page")
    return guard.check(media) if guard is not None else media


class UrlSource(Source):
    """An http(s) URL whose kind is only known after asking the server."""

    reconnects = True

    kind = "url"

    def __init__(
        self, url: str, source_id: str | None = None, timeout: float = 10.0, guard: UrlGuard | None = None
    ) -> None:
        super().__init__(url, source_id or mask_url(url))
        self.timeout = timeout
        self.guard = guard

    @property
    def display_name(self) -> str:
        return mask_url(self.uri)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        from pipeline.sources.mjpeg import MjpegSource

        kind = sniff_http(self.uri, self.timeout, self.guard)
        if kind == "mjpeg":
            inner: Source = MjpegSource(
                self.uri,
                source_id=self.source_id,
                connect_timeout=self.timeout,
                read_timeout=self.timeout,
                guard=self.guard,
            )
        else:
            target = resolve_page(self.uri, self.guard) if kind == "page" else self.uri
            inner = StreamSource(target, source_id=self.source_id, timeout=self.timeout, guard=self.guard)
        self.kind = inner.kind
        yield from inner.frames(stop)
        self.live = inner.live


def open_source(
    uri: str,
    *,
    loop: bool = False,
    timeout: float = 10.0,
    guard: UrlGuard | None = None,
    rtsp_transport: str = "tcp",
) -> Source:
    """The Source for a path or URL; unknown schemes and bad files fail here, at once."""
    text = uri.strip()
    if not text:
        raise SourceError("no source given; pass a video file path or a URL (rtsp://, http://, …)")
    scheme = urlsplit(text).scheme.lower()
    if scheme == "file":
        return FileSource(Path(urlsplit(text).path), loop=loop)
    if scheme in ("http", "https"):
        return UrlSource(text, timeout=timeout, guard=guard)
    if scheme in STREAM_SCHEMES:
        return StreamSource(text, timeout=timeout, rtsp_transport=rtsp_transport)
    if scheme and len(scheme) > 1:  # one letter is a Windows drive (C:\...)
        raise SourceError(
            f"{mask_url(text)}: unsupported scheme '{scheme}://'; use a file path, http(s)://, "
            "rtsp://, rtmp://, srt:// or udp://"
        )
    return FileSource(text, loop=loop)
