"""The colour that covers most of the picture, by name."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.measure.pictures import rgb_thumbnail

_DOMINANT_SHARE = 0.6  # share of the coloured pixels one colour name must cover to be the picture's colour
# OpenCV hue is 0..180; each name covers hues up to its bound.
_HUES = (
    (8, "red"),
    (20, "orange"),
    (33, "yellow"),
    (85, "green"),
    (100, "cyan"),
    (130, "blue"),
    (150, "purple"),
    (170, "pink"),
    (180, "red"),
)


def dominant_colour(image: np.ndarray) -> str | None:
    """The colour name that covers most of the picture, or None when no single colour dominates."""
    hsv = cv2.cvtColor(rgb_thumbnail(image), cv2.COLOR_RGB2HSV)
    hue = hsv[..., 0][(hsv[..., 1] >= 80) & (hsv[..., 2] >= 60)]
    if hue.size < 0.4 * hsv.shape[0] * hsv.shape[1]:
        return None
    counts: dict[str, int] = {}
    low = 0
    for high, name in _HUES:
        counts[name] = counts.get(name, 0) + int(((hue >= low) & (hue < high)).sum())
        low = high
    name, count = max(counts.items(), key=lambda item: item[1])
    return name if count >= _DOMINANT_SHARE * hue.size else None
