"""The one value every stage passes around: a decoded picture with its two clocks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    """An RGB picture stamped with media time (position in the source) and wall time (when decoded).

    Media time keeps commentary aligned with the video; wall time measures lag and latency.
    """

    image: np.ndarray  # H×W×3, uint8, RGB
    media_time: float
    wall_time: float
    index: int
    source_id: str
    capture_time: float | None = None  # wall clock when the camera took it, where the stream says (RTSP's RTCP)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])
