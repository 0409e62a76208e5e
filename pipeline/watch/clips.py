"""The short video around an alert: the seconds before it from a ring buffer, the seconds after as they come.

Every decoded frame is offered (``offer``, on the source's thread); the ring keeps ``CLIP_FPS`` frames a
second, scaled to at most ``CLIP_WIDTH`` wide, for ``seconds`` of media time (about 14 MB per camera at
the defaults). An alert opens a clip; once the picture has run ``seconds`` past the alert (or the
source ended) the clip is encoded to an in-memory MP4 (H.264) for the recorder to keep.
"""

from __future__ import annotations

import io
import threading
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from pipeline.frames import Frame
from pipeline.measure.pictures import fit_width

CLIP_FPS = 5.0
CLIP_WIDTH = 640


@dataclass
class PendingClip:
    alert_id: str
    rule: str
    path: str  # where the recorder keeps it, inside the session folder
    ends: float  # media time the clip runs to
    frames: list[tuple[float, np.ndarray]] = field(default_factory=list)


class ClipRing:
    """Thread-safe: the source thread offers frames, the watcher opens and collects clips."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ring: deque[tuple[float, np.ndarray]] = deque()
        self._pending: list[PendingClip] = []
        self._next = 0.0
        self._lock = threading.Lock()

    def offer(self, frame: Frame) -> None:
        """Keep the frame when it is due (``CLIP_FPS``), scaled down; cheap when it is not."""
        if self.seconds <= 0:
            return
        t = frame.media_time
        if self._next - 1.0 < t < self._next:
            return  # not due yet (media time that jumped back further is a new start)
        self._next = t + 1.0 / CLIP_FPS
        image = fit_width(frame.image, CLIP_WIDTH)
        with self._lock:
            self._ring.append((t, image))
            while self._ring and (self._ring[0][0] < t - self.seconds or self._ring[0][0] > t):
                self._ring.popleft()
            for clip in self._pending:
                if t <= clip.ends:
                    clip.frames.append((t, image))

    def open(self, alert_id: str, rule: str, path: str, at: float) -> None:
        """Start a clip around media time ``at``: the ring's frames so far, and the next ``seconds``."""
        if self.seconds <= 0:
            return
        with self._lock:
            self._pending.append(PendingClip(alert_id, rule, path, at + self.seconds, list(self._ring)))

    def ready(self, now: float, ended: bool) -> list[PendingClip]:
        """Clips whose time is up at media time ``now`` (all of them once the source ``ended``)."""
        with self._lock:
            done = [c for c in self._pending if ended or now >= c.ends]
            self._pending = [c for c in self._pending if c not in done]
            return done


def encode_clip(frames: list[tuple[float, np.ndarray]]) -> tuple[bytes, float]:
    """An MP4 (H.264, yuv420p) of RGB frames on their media times; (bytes, seconds). Empty for no frames."""
    if not frames:
        return b"", 0.0
    height, width = (d - d % 2 for d in frames[0][1].shape[:2])
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(CLIP_FPS), options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        start = frames[0][0]
        for t, image in frames:
            video = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:height, :width]), format="rgb24")
            video.pts, video.time_base = round((t - start) * 1000), Fraction(1, 1000)
            for packet in stream.encode(video):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue(), frames[-1][0] - start
