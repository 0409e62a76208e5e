"""How light the picture is, and how the light changed over a window (sudden or gradual)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.measure.pictures import grey_thumbnail


@dataclass(frozen=True, slots=True)
class Light:
    """Mean brightness (0..255) at the start and end of the window and the largest frame-to-frame step."""

    before: float
    after: float
    largest_step: float


def mean_brightness(image: np.ndarray) -> float:
    """Mean grey level 0..255 of the thumbnail (what a person would call how light the picture is)."""
    return float(grey_thumbnail(image).mean())


def measure_light(images: Sequence[np.ndarray]) -> Light:
    """Brightness at both ends of the window and the biggest single jump (sudden vs gradual)."""
    levels = [mean_brightness(im) for im in images] or [0.0]
    step = float(np.abs(np.diff(levels)).max()) if len(levels) > 1 else 0.0
    return Light(levels[0], levels[-1], step)
