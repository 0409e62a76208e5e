"""Decoding any container/codec FFmpeg reads, through PyAV, into paced, timestamped Frames.

Why PyAV rather than OpenCV's VideoCapture: it gives each frame's real presentation time (media
time for cuts and sync), open/read timeouts that interrupt a hung network read, per-protocol
FFmpeg options (RTSP transport, low-delay flags), stream inspection (an audio-only file is told
apart from a broken one) and rotation metadata, all from a wheel that bundles FFmpeg.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import av
import av.error
import httpx
import numpy as np

from pipeline.errors import SourceError
from pipeline.frames import Frame
from pipeline.sources.guard import resolve_host

MAX_SIDE = 1920  # larger pictures are downscaled on decode: nothing downstream needs more
LATE_TOLERANCE = 0.1  # seconds behind the wall clock before a paced frame is dropped
STALL_RESET = 0.5  # seconds behind after which the clock is re-anchored instead of dropping a burst
NO_DECODER = "the video codec is not supported by the bundled FFmpeg; re-encode to H.264"


@dataclass
class DecodeStats:
    """Counters the source exposes for metrics and the ingest benchmark."""

    decoded: int = 0
    dropped_late: int = 0
    stalls: int = 0
    max_lag: float = 0.0


def describe_av_error(exc: Exception, target: str) -> str:
    """Map PyAV/FFmpeg exceptions to one line saying what went wrong and what to do.

    Never ``str(exc)``: PyAV puts the URL FFmpeg opened, credentials and all, into it.
    """
    if isinstance(exc, av.error.FileNotFoundError):
        return f"{target}: not found; check the path or URL"
    if isinstance(exc, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError):
        return f"{target}: access denied ({exc.strerror}); put credentials in the URL as scheme://user:pass@host/…"
    if isinstance(exc, av.error.HTTPNotFoundError):
        return f"{target}: the server says 404 not found; check the stream path"
    if isinstance(exc, av.error.HTTPError):
        return f"{target}: HTTP error ({exc.strerror}); check the URL"
    if isinstance(exc, av.error.ConnectionRefusedError):
        return f"{target}: connection refused; is the camera or server running and the port right?"
    if isinstance(exc, av.error.TimeoutError | av.error.ExitError):
        return f"{target}: timed out waiting for data; check the address and that the stream is live"
    if isinstance(exc, av.error.InvalidDataError):
        return f"{target}: not a video FFmpeg can read (wrong format, truncated or not a video at all)"
    if isinstance(exc, av.error.ProtocolNotFoundError):
        return f"{target}: unsupported URL scheme; use a file path, http(s)://, rtsp://, rtmp:// or an HLS .m3u8"
    if isinstance(exc, av.error.DecoderNotFoundError):
        return f"{target}: {NO_DECODER}"
    if isinstance(exc, OSError) and exc.errno == errno.EIO:
        return f"{target}: the connection failed (input/output error); check the address and that the server is up"
    return f"{target}: {getattr(exc, 'strerror', None) or type(exc).__name__}"


def _is_mp4(head: bytes) -> bool:
    """MP4 and QuickTime files start with an ``ftyp`` box."""
    return head[4:8] == b"ftyp"


def _mp4_without_ranges(url: str, timeout: float) -> bool:
    """Whether an HTTP server serves an MP4 but ignores Range requests (200 and the whole file, not 206)."""
    head = b""
    try:
        with (
            httpx.Client(timeout=timeout) as client,
            client.stream("GET", url, headers={"Range": "bytes=0-7"}) as response,
        ):
            for chunk in response.iter_bytes():
                head += chunk
                if len(head) >= 8:
                    break
            return response.status_code == 200 and _is_mp4(head)
    except httpx.HTTPError:
        return False


def _local_mp4(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            return _is_mp4(file.read(8))
    except OSError:  # not a local file (a URL), or unreadable
        return False


def explain_av_error(exc: Exception, target: str, display: str, timeout: float) -> str:
    """``describe_av_error``, told apart further where FFmpeg's own error is vague: an input/output error
    on a network URL (a host that does not resolve, a server that cannot seek) or a cut-off MP4.
    ``target`` is what FFmpeg opened (credentials and all, to ask the server); only ``display`` is shown."""
    parts = urlsplit(target)
    if isinstance(exc, av.error.ProtocolNotFoundError) and parts.scheme:
        return (  # e.g. srt://: PyAV's wheels bundle an FFmpeg built without libsrt
            f"{display}: the FFmpeg bundled with PyAV cannot open {parts.scheme}:// streams; relay the stream to "
            "RTSP, RTMP or HLS (MediaMTX, or ffmpeg with SRT support) and open that"
        )
    if isinstance(exc, OSError) and exc.errno == errno.EPROTONOSUPPORT and parts.scheme.lower().startswith("rtsp"):
        return (  # the camera answered SETUP with "461 Unsupported transport"
            f"{display}: the camera does not offer RTP over the transport asked for; "
            "switch --rtsp-transport (ONLOOKER_RTSP_TRANSPORT) between tcp and udp"
        )
    if isinstance(exc, OSError) and exc.errno == errno.EIO and parts.hostname:
        try:
            resolve_host(parts.hostname)
        except SourceError as unresolved:
            return f"{display}: {unresolved}"
        if parts.scheme.lower() in ("http", "https") and _mp4_without_ranges(target, timeout):
            return (
                f"{display}: the server does not support seeking (HTTP Range requests), and this video needs it: "
                "an MP4 whose index (moov atom) is at the end; move the index to the front ('faststart': "
                "ffmpeg -i in.mp4 -c copy -movflags +faststart out.mp4) or serve it from a server with Range support"
            )
    if isinstance(exc, av.error.InvalidDataError) and _local_mp4(target):
        return (
            f"{display}: the MP4's index (moov atom) is missing or damaged, usually because the file was cut short "
            "(an unfinished copy, download or recording); copy or download it again"
        )
    return describe_av_error(exc, display)


def open_video(
    target: str, display: str, options: dict[str, str] | None = None, timeout: float = 10.0
) -> av.container.InputContainer:
    """Open a container and make sure it has a video stream FFmpeg can decode; raise SourceError otherwise.

    ``timeout`` bounds the open as a deadline, not as silence between bytes: PyAV's interrupt callback
    gives FFmpeg ``timeout`` seconds for the header and again for stream probing, however slowly
    the bytes trickle in, so a stalled or trickling server fails within twice ``timeout``.
    """
    try:
        container = av.open(target, options=options or {}, timeout=timeout)
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceError(explain_av_error(exc, target, display, timeout)) from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        container.close()
        raise SourceError(
            f"{display}: has no video stream (contains {', '.join(kinds)}); pick a file or stream with video"
        )
    if container.streams.video[0].codec_context is None:  # FFmpeg can demux it but has no decoder
        container.close()
        raise SourceError(f"{display}: {NO_DECODER}")
    return container


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """RGB array, downscaled to MAX_SIDE and turned upright per the rotation metadata."""
    width, height = frame.width, frame.height
    scale = min(1.0, MAX_SIDE / max(width, height))
    if scale < 1.0:
        image = frame.to_ndarray(
            format="rgb24", width=round(width * scale) // 2 * 2, height=round(height * scale) // 2 * 2
        )
    else:
        image = frame.to_ndarray(format="rgb24")
    turns = round((frame.rotation or 0) / 90) % 4  # counterclockwise, as np.rot90 turns
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def capture_time(container: av.container.InputContainer, frame_time: float) -> float | None:
    """When the camera took the frame (Unix time), from the sender reports an RTSP camera sends
    (RTCP's wall clock for its RTP timestamps); None where the stream does not say."""
    realtime = container.start_time_realtime
    return realtime / 1e6 + frame_time if realtime else None


def _timely_packets(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, read_timeout: float | None
) -> Iterator[av.Packet]:
    """Demuxed packets of ``stream``, minus any the demuxer only let go of because a read timed out.

    FFmpeg's RTSP demuxer keeps the newest frame until the next one starts; when a camera hangs, the
    read timeout's interrupt makes it hand that frame over seconds late, just before the timeout
    error. Passed on, it would count as the feed coming back.
    """
    packets = container.demux(stream)
    while True:
        asked = time.monotonic()
        packet = next(packets, None)
        if packet is None:
            return
        if read_timeout is not None and time.monotonic() - asked >= read_timeout:
            continue  # the timeout error comes with the next read
        yield packet


def decode_frames(
    container: av.container.InputContainer,
    stop: threading.Event,
    source_id: str,
    display: str,
    *,
    paced: bool,
    rate: float = 1.0,
    loop: bool = False,
    stats: DecodeStats | None = None,
    read_timeout: float | None = None,
    on_packet: Callable[[av.Packet, float], None] | None = None,
) -> Iterator[Frame]:
    """Yield frames from the first video stream; ``on_packet`` also gets each packet as demuxed, with its
    media time (from the first decoded frame on: earlier packets cannot be played on their own).

    ``paced`` plays at ``rate`` times the native rate against the wall clock (files); frames
    more than ``LATE_TOLERANCE`` (or two frames) late are dropped before colour conversion, so a
    slow machine skips frames instead of falling further and further behind. Live streams are not
    paced: they arrive in real time, and the newest frame is always the one handed on.
    """
    stats = stats or DecodeStats()
    stream = container.streams.video[0]
    # Frame threading holds one frame per extra thread before the first comes out: throughput for
    # files, but on a live stream every frame ~2 frames late (65 ms at 30 fps on 2 cores, measured).
    stream.thread_type = "AUTO" if paced else "SLICE"
    fps = float(stream.average_rate or stream.guessed_rate or 30)
    frame_period = 1.0 / max(fps, 1.0)
    index = 0
    offset = 0.0  # media time added per loop iteration
    first_pts: float | None = None
    last_time = 0.0
    start_wall: float | None = None
    waiting: list[av.Packet] = []  # packets for on_packet before the first frame set the clock
    while True:
        try:
            for packet in _timely_packets(container, stream, read_timeout):
                for av_frame in packet.decode():
                    if stop.is_set():
                        return
                    raw_time = av_frame.time if av_frame.time is not None else index * frame_period
                    if first_pts is None:
                        first_pts = raw_time
                    media_time = offset + max(raw_time - first_pts, 0.0)
                    last_time = media_time
                    if paced:
                        now = time.monotonic()
                        if start_wall is None:
                            start_wall = now - media_time / rate
                        due = start_wall + media_time / rate
                        if due > now and stop.wait(due - now):
                            return
                        lag = time.monotonic() - due
                        stats.max_lag = max(stats.max_lag, lag)
                        if lag > STALL_RESET:  # a hiccup (slow disk or network), not slowness: resume from here
                            start_wall += lag
                            stats.stalls += 1
                        elif lag > max(2 * frame_period / rate, LATE_TOLERANCE):
                            stats.dropped_late += 1
                            index += 1
                            continue
                    image = _to_rgb(av_frame)
                    stats.decoded += 1
                    yield Frame(
                        image=image,
                        media_time=media_time,
                        wall_time=time.time(),
                        index=index,
                        source_id=source_id,
                        capture_time=capture_time(container, raw_time) if not paced else None,
                    )
                    index += 1
                if on_packet is not None and packet.pts is not None:
                    waiting.append(packet)  # frame threading may hold a few before the first frame is out
                    if first_pts is not None:
                        for kept in waiting:
                            if (kept_time := float(kept.pts * kept.time_base)) >= first_pts:
                                on_packet(kept, offset + kept_time - first_pts)
                        waiting.clear()
        except (av.error.FFmpegError, OSError) as exc:
            if stats.decoded == 0:  # FFmpeg may open a file and fail only at its first read: explain it the same
                raise SourceError(explain_av_error(exc, container.name, display, read_timeout or 10.0)) from None
            if not isinstance(exc, av.error.EOFError):
                raise SourceError(describe_av_error(exc, display)) from None
        if not loop or stats.decoded == 0:
            return
        offset = last_time + frame_period
        first_pts = None
        try:
            container.seek(0)
        except av.error.FFmpegError as exc:
            raise SourceError(f"{display}: cannot rewind to loop ({exc})") from None
