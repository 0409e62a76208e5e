"""A frame made ready to measure: any channel layout as RGB, the shared thumbnail, a smaller copy, a region."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.scene import thumbnail

Bounds = tuple[float, float, float, float]  # (left, top, right, bottom) as fractions of the picture


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Accept grey or RGBA pictures too, so an odd source never crashes a measurement."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    return image


def rgb_thumbnail(image: np.ndarray) -> np.ndarray:
    """The 64×36 scene thumbnail (INTER_AREA averaging also removes sensor noise); a thumbnail stays as it is."""
    return thumbnail(as_rgb(image))


def grey_thumbnail(image: np.ndarray) -> np.ndarray:
    """The thumbnail in grey levels 0..255, as float32 for arithmetic."""
    return cv2.cvtColor(rgb_thumbnail(image), cv2.COLOR_RGB2GRAY).astype(np.float32)


def fit_width(image: np.ndarray, width: int) -> np.ndarray:
    """Downscale (never upscale) to ``width``, keeping the aspect ratio."""
    h, w = image.shape[:2]
    if w <= width:
        return image
    return cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


def crop(image: np.ndarray, bounds: Bounds) -> np.ndarray:
    """The part of ``image`` inside ``bounds``, at least one pixel each way."""
    h, w = image.shape[:2]
    left, top, right, bottom = bounds
    return image[round(top * h) : max(round(bottom * h), 1), round(left * w) : max(round(right * w), 1)]
