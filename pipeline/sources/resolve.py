"""Turn what a user typed into the right Source: file path, stream URL, MJPEG camera or web page.

HTTP URLs are sniffed by Content-Type, and where it does not say, by the body's first bytes (MJPEG
cameras, HTML pages and plain video all use http://), on the connection that then streams them;
web pages such as YouTube are resolved to a media URL with yt-dlp when it is installed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.errors import SourceError
from pipeline.frames import Frame
from pipeline.sources.base import Source
from pipeline.sources.file import FileSource
from pipeline.sources.guard import UrlGuard
from pipeline.sources.http_stream import HttpSource, HttpStream, Line, open_stream
from pipeline.sources.stream import STREAM_SCHEMES, StreamSource
from pipeline.sources.urls import describe_http_status, mask_url, scrub

log = logging.getLogger(__name__)

PAGE_HOSTS = ("youtube.com", "youtu.be", "vimeo.com", "twitch.tv", "dailymotion.com", "facebook.com", "x.com")


def is_page_host(url: str) -> bool:
    """Whether the URL is on a video site whose pages yt-dlp turns into a media URL (no need to ask the server)."""
    host = (urlsplit(url).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in PAGE_HOSTS)


@contextlib.contextmanager
def sniffed(url: str, line: Line, timeout: float, guard: UrlGuard | None) -> Iterator[HttpStream]:
    """The open response of an http(s) URL, and what it carries: ``mjpeg``, ``page`` or ``video``; the
    response headers must all come within twice ``timeout``; with a ``guard``, every connection (each
    redirect hop) must pass it."""
    with open_stream(url, line, connect_timeout=timeout, read_timeout=timeout, guard=guard) as stream:
        response = stream.response
        if response.status_code >= 400:
            raise SourceError(describe_http_status(response.status_code, url, bool(response.request.url.username)))
        yield stream


def sniff_http(url: str, timeout: float = 10.0, guard: UrlGuard | None = None) -> str:
    """What an http(s) URL carries (``mjpeg``, ``page`` or ``video``), asked on a connection of its own."""
    if is_page_host(url):
        return "page"
    with sniffed(url, Line(), timeout, guard) as stream:
        return stream.kind


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


class UrlSource(HttpSource):
    """An http(s) URL whose kind is only known after asking the server, asked on the connection that
    then streams it: many cameras serve one client at a time (DroidCam's free app, cheap IP cameras,
    FFmpeg's ``-listen 1``), so a sniff on a connection of its own would use up or block the only one.

    - MJPEG (by its Content-Type, or where the type does not say, such as FFmpeg's
      application/octet-stream, a body that starts with a boundary or a JPEG) is read on that connection.
    - A web page is closed and resolved with yt-dlp: the media URL it finds is another server's.
    - Other video is closed and FFmpeg opens the URL itself, because FFmpeg needs the URL, not bytes:
      HLS and DASH playlists name their segments relative to it, an MP4 may need seeking with Range
      requests (its index at the end; ``--loop``), and the open and read deadlines are PyAV's interrupt
      callback on FFmpeg's own HTTP reads, which bytes handed through Python would escape. Servers of
      such video are web servers and media servers that take many clients; cameras that stream H.264
      speak RTSP (opened once, no sniff). A server that streams MPEG-TS or FLV over HTTP to one client
      only (``ffmpeg -f mpegts -listen 1 http://…``) is a known gap: docs/inputs.md.
    """

    kind = "url"

    def __init__(
        self, url: str, source_id: str | None = None, timeout: float = 10.0, guard: UrlGuard | None = None
    ) -> None:
        super().__init__(url, source_id, guard)
        self.timeout = timeout
        self._inner: Source | None = None  # written by the reader thread only

    @property
    def live(self) -> bool:
        """What the reader found (a finite HTTP video is not live), also while it plays: the watchdog asks."""
        return self._inner.live if self._inner is not None else True

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        from pipeline.sources.mjpeg import MjpegSource

        kind = "page"
        if not is_page_host(self.uri):
            with sniffed(self.uri, self.line, self.timeout, self.guard) as stream:
                kind = stream.kind
                if kind == "mjpeg":
                    timeouts = {"connect_timeout": self.timeout, "read_timeout": self.timeout}
                    mjpeg = MjpegSource(self.uri, self.source_id, guard=self.guard, **timeouts)
                    self._play(mjpeg)
                    yield from mjpeg.read(stream, stop)
        if kind == "mjpeg" or stop.is_set():  # the stream ended, or Stop cut it short
            return
        target = resolve_page(self.uri, self.guard) if kind == "page" else self.uri
        inner = StreamSource(target, source_id=self.source_id, timeout=self.timeout, guard=self.guard)
        self._play(inner)
        yield from inner.frames(stop)

    def _play(self, inner: Source) -> None:
        self._inner = inner
        self.kind = inner.kind
        inner.video_tap = self.video_tap
        inner.keep = self.keep  # type: ignore[method-assign]  # on this source's timeline (its reconnect offset)


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
