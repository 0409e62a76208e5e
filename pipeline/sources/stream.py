"""Network video (RTSP, RTMP, SRT, HLS, plain HTTP video) through FFmpeg, tuned for low delay."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

from pipeline.errors import SourceError
from pipeline.frames import Frame
from pipeline.sources.base import Source
from pipeline.sources.decode import DecodeStats, decode_frames, open_video
from pipeline.sources.guard import UrlGuard
from pipeline.sources.guard_proxy import GuardProxy, ffmpeg_guarded
from pipeline.sources.hls_guard import check_playlist
from pipeline.sources.urls import mask_url

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "tcp")
STREAM_SCHEMES = (*LIVE_SCHEMES, "http", "https")


def ffmpeg_options(url: str, rtsp_transport: str = "tcp") -> dict[str, str]:
    """Low-delay demuxer options per protocol: never let FFmpeg buffer seconds of old video."""
    scheme = urlsplit(url).scheme.lower()
    options = {"flags": "low_delay"}
    if scheme in LIVE_SCHEMES:
        # Not for HTTP/HLS: there "nobuffer" discards the packets read while probing the format.
        options["fflags"] = "nobuffer"
    if scheme in ("rtsp", "rtsps"):
        options |= {"rtsp_transport": rtsp_transport, "max_delay": "500000"}
    return options


class StreamSource(Source):
    """Reads a network stream; finite HTTP videos are paced like files, live protocols are not."""

    reconnects = True

    kind = "stream"

    def __init__(
        self,
        url: str,
        source_id: str | None = None,
        timeout: float = 10.0,
        rtsp_transport: str = "tcp",
        guard: UrlGuard | None = None,
    ) -> None:
        super().__init__(url, source_id or mask_url(url))
        self.timeout = timeout
        self.rtsp_transport = rtsp_transport
        self.guard = guard  # a shared app's: playlists are read first, then FFmpeg's HTTP goes through its proxy
        self.stats = DecodeStats()

    @property
    def display_name(self) -> str:
        return mask_url(self.uri)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        check_playlist(self.uri, self.guard, self.timeout, stop)  # at each (re)connect: a clear reason up front
        if stop.is_set():
            return
        proxy = ffmpeg_guarded(self.uri, self.guard, self.timeout)
        if proxy is None:
            yield from self._decode(stop, None)
            return
        with proxy:
            yield from self._decode(stop, proxy)

    def _decode(self, stop: threading.Event, proxy: GuardProxy | None) -> Iterator[Frame]:
        """Open and decode; a request the proxy refused ends it with the guard's reason, not FFmpeg's 403."""
        options = ffmpeg_options(self.uri, self.rtsp_transport) | (proxy.ffmpeg_options if proxy else {})
        try:
            container = open_video(self.uri, self.display_name, options, timeout=self.timeout)
        except SourceError:
            if proxy is not None:
                proxy.check()
            raise
        scheme = urlsplit(self.uri).scheme.lower()
        self.live = scheme in LIVE_SCHEMES or container.duration is None
        try:
            frames = decode_frames(
                container,
                stop,
                self.source_id,
                self.display_name,
                paced=not self.live,
                stats=self.stats,
                read_timeout=self.timeout,
                on_packet=(lambda packet, t: self.keep("packet", packet, t)) if self.video_tap else None,
            )
            for frame in frames:
                if proxy is not None:
                    proxy.check()
                yield frame
            if proxy is not None:
                proxy.check()
        except SourceError:
            if proxy is not None:
                proxy.check()
            raise
        finally:
            container.close()
