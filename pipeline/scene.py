"""Cheap per-frame change scoring: hard-cut detection, motion level and a 0..1 scene weight.

Works on a 64×36 thumbnail so it can run on every decoded frame: an HSV colour histogram
distance catches cuts between differently coloured shots, a grey-level difference catches
cuts within the same palette and measures motion. A cut must also stand out from the recent
level of change, so fast continuous motion does not fire cut after cut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

THUMB_SIZE = (64, 36)
_MOTION_FULL_SCALE = 0.05  # share of the picture changing per 1/15 s that counts as "a lot happening"
_PIXEL_CHANGED = 0.08  # grey-level difference (0..1) above which a thumbnail pixel counts as changed
_REFERENCE_DT = 1.0 / 15  # motion is normalised to this frame interval, so it does not depend on FPS


@dataclass(frozen=True, slots=True)
class SceneScore:
    """The result of scoring one frame against the previous scored frame."""

    change: float  # 0..1, how different from the previous scored frame
    motion: float  # smoothed share of the picture that changed per 1/15 s, 0..1
    weight: float  # 0..1, how much is happening (drives commentary density)
    cut: bool


def thumbnail(image: np.ndarray) -> np.ndarray:
    """Downscale an RGB frame to the fixed scoring size."""
    return cv2.resize(image, THUMB_SIZE, interpolation=cv2.INTER_AREA)


def _histogram(thumb: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(thumb, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [16, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
    return hist / max(float(hist.sum()), 1.0)


class SceneScorer:
    """Stateful scorer fed frames in media order; not thread-safe (one hub owns it)."""

    def __init__(
        self,
        cut_threshold: float = 0.45,
        cut_contrast: float = 3.0,
        min_cut_gap: float = 0.5,
        motion_halflife: float = 0.5,
        cut_afterglow: float = 3.0,
    ) -> None:
        self.cut_threshold = cut_threshold
        self.cut_contrast = cut_contrast
        self.min_cut_gap = min_cut_gap
        self.motion_halflife = motion_halflife
        self.cut_afterglow = cut_afterglow
        self.reset()

    def reset(self) -> None:
        """Forget history (a new source or a seek): the next frame is a fresh start, not a cut."""
        self._prev_hist: np.ndarray | None = None
        self._prev_grey: np.ndarray | None = None
        self._prev_time = 0.0
        self._baseline = 0.0
        self._motion = 0.0
        self._last_cut = -math.inf

    def score(self, image: np.ndarray, media_time: float) -> SceneScore:
        thumb = thumbnail(image)
        hist = _histogram(thumb)
        grey = cv2.cvtColor(thumb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        if self._prev_hist is None or self._prev_grey is None:
            self._prev_hist, self._prev_grey, self._prev_time = hist, grey, media_time
            return SceneScore(0.0, 0.0, 0.0, False)
        hist_dist = 0.5 * float(np.abs(hist - self._prev_hist).sum())
        delta = np.abs(grey - self._prev_grey)
        diff = float(delta.mean())
        change = min(1.0, max(hist_dist, diff * 4.0))
        dt = max(media_time - self._prev_time, 1e-3)
        moved = min(1.0, float((delta > _PIXEL_CHANGED).mean()) * _REFERENCE_DT / dt)
        cut = (
            change >= self.cut_threshold
            and change >= self.cut_contrast * self._baseline
            and media_time - self._last_cut >= self.min_cut_gap
        )
        decay = 0.5 ** (dt / self.motion_halflife)
        if cut:
            self._last_cut = media_time
        else:
            self._baseline = decay * self._baseline + (1 - decay) * change
            self._motion = decay * self._motion + (1 - decay) * moved
        self._prev_hist, self._prev_grey, self._prev_time = hist, grey, media_time
        afterglow = math.exp(-(media_time - self._last_cut) / self.cut_afterglow) if self._last_cut > -math.inf else 0.0
        weight = min(1.0, max(self._motion / _MOTION_FULL_SCALE, afterglow))
        return SceneScore(change, self._motion, weight, cut)
