"""A picture as a JPEG for people and receivers: the live view, the engine's frames, alerts' snapshots."""

from __future__ import annotations

import cv2
import numpy as np


def encode_jpeg(image: np.ndarray, quality: int = 80, max_side: int = 1280) -> bytes:
    """RGB → JPEG bytes, downscaled so its longest side is at most ``max_side`` (a 4K source does not flood a
    browser or an engine); ValueError when the encoder refuses the picture."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(round(width * scale), 1), max(round(height * scale), 1))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()
