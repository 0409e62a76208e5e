"""A camera's source video kept on disk, on the session's media timeline, in segments.

What each source hands over, and how it is kept:

* network video demuxed by FFmpeg (RTSP, RTMP, HLS, HTTP video): its packets, **remuxed without
  re-encoding** into MPEG-TS segments (a TS file cut off by a crash plays up to its last packet);
* an MJPEG camera: its JPEGs as they came, into Matroska segments of MJPEG (no re-encoding either);
* the browser webcam: RGB frames at the rate they arrive, **encoded** with libx264 (``veryfast``) into
  MPEG-TS segments.

Timestamps are the frames' media times (0 = the first frame, carried on across reconnects), so the
video lines up with the narration and subtitles. A new segment starts every ``SEGMENT_SECONDS`` at a key
frame, and whenever the stream's shape changes (a camera that came back at another resolution); a crash
loses at most the segment being written's last fraction of a second. The source thread only queues (a
bounded queue: a slow disk drops video, counted, and never slows the picture); the recorder's thread
writes (``write``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

SEGMENT_SECONDS = 600.0
MAX_QUEUE = 2000  # packets or frames waiting for the writer (a minute of 30 fps video)
TIME_BASE = Fraction(1, 90_000)  # MPEG-TS's clock
ENCODE_FPS_BASE = Fraction(1, 1000)  # webcam frames: millisecond timestamps (they come when they come)


@dataclass
class VideoStats:
    """What was kept and what was not, for ``session.json``."""

    written: int = 0  # packets or frames written
    dropped: int = 0  # dropped because the writer fell behind
    skipped: int = 0  # unusable (before the first key frame, timestamps going backwards)
    segments: list[str] = field(default_factory=list)


class _Segments:
    """Numbered segment files ``<stem>-0001<suffix>`` in a folder; tells the owner of each new one."""

    def __init__(self, folder: Path, stem: str, suffix: str, on_segment: Callable[[str], None]) -> None:
        self.folder, self.stem, self.suffix = folder, stem, suffix
        self.on_segment = on_segment
        self.count = 0

    def next_path(self) -> Path:
        self.count += 1
        name = f"{self.stem}-{self.count:04d}{self.suffix}"
        self.on_segment(name)
        return self.folder / name


class _Writer:
    """One open segment: a container with one video stream, closed before the next opens."""

    def __init__(self) -> None:
        self.container: Any = None
        self.stream: Any = None
        self.started_at = 0.0
        self.last_dts: int | None = None

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
        self.container = self.stream = None
        self.last_dts = None


class VideoRecorder:
    """A camera's video: ``packet``, ``jpeg`` or ``image`` from the source thread; ``write`` and ``close``
    from the recorder's thread."""

    def __init__(self, folder: Path, stem: str, on_segment: Callable[[str], None]) -> None:
        self.stats = VideoStats()
        self._queue: deque[tuple[str, Any, float]] = deque()
        self._lock = threading.Lock()
        self._on_segment = on_segment
        self._ts = _Segments(folder, stem, ".ts", self._segment)
        self._mkv = _Segments(folder, stem, ".mkv", self._segment)
        self._out = _Writer()
        self._shape: tuple | None = None  # what the open segment was made for
        self._encoder_pts = -1

    def _segment(self, name: str) -> None:
        self.stats.segments.append(name)
        self._on_segment(name)

    # --- the source's side: queue only ---
    def packet(self, packet: av.Packet, media_time: float) -> None:
        """A demuxed video packet (network video) at ``media_time``."""
        self._put("packet", packet, media_time)

    def jpeg(self, data: bytes, media_time: float) -> None:
        """An MJPEG camera's JPEG, as it came."""
        self._put("jpeg", data, media_time)

    def image(self, rgb: np.ndarray, media_time: float) -> None:
        """An RGB frame to encode (the browser webcam)."""
        self._put("image", rgb, media_time)

    def _put(self, kind: str, item: Any, media_time: float) -> None:
        with self._lock:
            if len(self._queue) >= MAX_QUEUE:
                self._queue.popleft()
                self.stats.dropped += 1
            self._queue.append((kind, item, media_time))

    # --- the recorder's side ---
    def write(self) -> None:
        """Write what is queued (raises OSError when the disk refuses: the recorder stops for good)."""
        while True:
            with self._lock:
                if not self._queue:
                    return
                kind, item, media_time = self._queue.popleft()
            if kind == "packet":
                self._write_packet(item, media_time)
            elif kind == "jpeg":
                self._write_jpeg(item, media_time)
            else:
                self._write_image(item, media_time)

    def close(self) -> None:
        self.write()
        if self._shape is not None and self._shape[0] == "image" and self._out.stream is not None:
            for packet in self._out.stream.encode(None):
                self._out.container.mux(packet)
        self._out.close()

    def _open(self, shape: tuple, path: Path, make_stream: Callable[[Any], Any], media_time: float) -> None:
        self._out.close()
        options = {"flush_packets": "1"} if path.suffix == ".ts" else {}
        self._out.container = av.open(str(path), "w", options=options)
        self._out.stream = make_stream(self._out.container)
        self._out.started_at = media_time
        self._shape = shape

    def _due_for_new_segment(self, shape: tuple, media_time: float, key: bool) -> bool:
        if shape != self._shape or self._out.container is None:
            return True
        return key and media_time - self._out.started_at >= SEGMENT_SECONDS

    def _write_packet(self, packet: av.Packet, media_time: float) -> None:
        source = packet.stream
        codec = source.codec_context
        shape = ("packet", codec.name, codec.width, codec.height, bytes(codec.extradata or b""))
        if self._due_for_new_segment(shape, media_time, packet.is_keyframe):
            if not packet.is_keyframe:
                self.stats.skipped += 1  # a segment must start at a key frame to play on its own
                return
            self._open(shape, self._ts.next_path(), lambda c: c.add_stream_from_template(source), media_time)
        self._mux(packet, media_time, packet.pts, packet.dts, source.time_base)

    def _write_jpeg(self, data: bytes, media_time: float) -> None:
        if self._shape is None or self._shape[0] != "jpeg":
            width, height = jpeg_size(data)
            shape: tuple = ("jpeg", width, height)
        else:
            shape = self._shape
        if self._due_for_new_segment(shape, media_time, key=True):
            width, height = shape[1], shape[2]

            def mjpeg_stream(container: Any) -> Any:
                stream = container.add_stream("mjpeg", rate=30)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
                stream.time_base = ENCODE_FPS_BASE
                return stream

            self._open(shape, self._mkv.next_path(), mjpeg_stream, media_time)
        packet = av.Packet(data)
        packet.is_keyframe = True
        self._mux(packet, media_time, None, None, None)

    def _write_image(self, rgb: np.ndarray, media_time: float) -> None:
        height, width = rgb.shape[:2]
        shape = ("image", width // 2 * 2, height // 2 * 2)
        if self._due_for_new_segment(shape, media_time, key=True):
            if self._shape is not None and self._shape[0] == "image" and self._out.stream is not None:
                for packet in self._out.stream.encode(None):
                    self._out.container.mux(packet)

            def h264_stream(container: Any) -> Any:
                stream = container.add_stream("libx264", rate=30, options={"preset": "veryfast", "tune": "zerolatency"})
                stream.width, stream.height, stream.pix_fmt = shape[1], shape[2], "yuv420p"
                stream.codec_context.time_base = ENCODE_FPS_BASE
                return stream

            self._open(shape, self._ts.next_path(), h264_stream, media_time)
        pts = round(media_time / ENCODE_FPS_BASE)
        if pts <= self._encoder_pts:
            self.stats.skipped += 1
            return
        self._encoder_pts = pts
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: shape[2], : shape[1]]), format="rgb24")
        frame.pts, frame.time_base = pts, ENCODE_FPS_BASE
        for packet in self._out.stream.encode(frame):
            self._out.container.mux(packet)
        self.stats.written += 1

    def _mux(self, packet: av.Packet, media_time: float, pts: int | None, dts: int | None, base: Any) -> None:
        """Place a packet at ``media_time`` (on a 90 kHz clock the muxer rescales), keeping its decode-order
        offset (B-frames)."""
        new_pts = round(media_time / TIME_BASE)
        shift = round((pts - dts) * base / TIME_BASE) if pts is not None and dts is not None and base else 0
        new_dts = new_pts - shift
        if self._out.last_dts is not None and new_dts <= self._out.last_dts:
            self.stats.skipped += 1  # the muxer needs decode times that only go forward
            return
        packet.stream = self._out.stream
        packet.time_base = TIME_BASE
        packet.pts, packet.dts = new_pts, new_dts
        self._out.container.mux(packet)
        self._out.last_dts = new_dts
        self.stats.written += 1


def jpeg_size(data: bytes) -> tuple[int, int]:
    """Width and height from a JPEG's start-of-frame marker (no decoding)."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    raise ValueError("no start-of-frame marker in the JPEG")
