"""Thread-safe ring buffer of the most recent captured frames, with striding for the model."""

from __future__ import annotations

import threading
from collections import deque

from pipeline.frames import Frame


class FrameWindow:
    """The last ``size`` captured frames; old frames fall out, memory stays bounded."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        self._frames: deque[Frame] = deque(maxlen=size)
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._frames.maxlen or 0

    def add(self, frame: Frame) -> None:
        with self._lock:
            self._frames.append(frame)

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def snapshot(self, stride: int = 1, limit: int | None = None, since: float | None = None) -> list[Frame]:
        """Frames oldest→newest, every ``stride``-th counted back from the newest (which is always in).

        ``limit`` caps the count (keeping the newest); ``since`` drops frames older than that media
        time, so a comment after a scene cut is not about the previous scene.
        """
        if stride < 1:
            raise ValueError(f"stride must be at least 1, got {stride}")
        with self._lock:
            frames = list(self._frames)
        if since is not None:
            frames = [f for f in frames if f.media_time >= since]
        picked = frames[::-1][::stride][::-1]
        if limit is not None:
            picked = picked[-limit:] if limit > 0 else []
        return picked
