"""Synthetic pictures whose content is known exactly: a textured backdrop, moving blocks, light and colour changes.

Shared by the measurement tests and the offline narrator's wording tests, so both look at the same scenes."""

from __future__ import annotations

import cv2
import numpy as np

W, H = 640, 360


def backdrop(width: int = W, height: int = H) -> np.ndarray:
    """A smooth two-way gradient: texture for correlation, nothing a face detector could mistake."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([40 + x * 160 // width, 40 + y * 160 // height, np.full_like(x, 100)], axis=-1).astype(np.uint8)


def moving_block_left(count: int = 8) -> list[np.ndarray]:
    """A white block sliding down inside the left third."""
    out = []
    for i in range(count):
        im = backdrop()
        cv2.rectangle(im, (30, 40 + i * 25), (150, 120 + i * 25), (255, 255, 255), -1)
        out.append(im)
    return out


def moving_block_across(count: int = 8) -> list[np.ndarray]:
    """A dark block crossing the picture left to right at mid height."""
    out = []
    for i in range(count):
        im = backdrop()
        x = 20 + i * 75
        cv2.rectangle(im, (x, 140), (x + 60, 230), (10, 10, 10), -1)
        out.append(im)
    return out


def scaled(image: np.ndarray, factor: float) -> np.ndarray:
    """The same picture with its light multiplied by ``factor``."""
    return np.clip(image.astype(np.float32) * factor, 0, 255).astype(np.uint8)


def solid_scene(rgb: tuple[int, int, int]) -> np.ndarray:
    """One colour with a white disc: a scene a cut to another colour changes completely."""
    im = np.empty((H, W, 3), np.uint8)
    im[:] = rgb
    cv2.circle(im, (W // 3, H // 2), 60, (255, 255, 255), -1)
    return im
