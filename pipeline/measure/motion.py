"""How much of the picture moves between frames, where, and which way it travels.

Measured on the shared 64×36 scene thumbnail; a change of light or exposure is matched away first,
so a lamp switching on is not motion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from pipeline.measure.pictures import grey_thumbnail

_DIFF_THRESHOLD = 16  # grey levels (of 255) a thumbnail pixel must change by, after light compensation
MOTION_NONE = 0.0015  # mean changed fraction per frame pair below which nothing counts as moving
_TONE_SHIFT = 4.0  # mean grey change between two frames above which their tones are matched first
_MAX_GAIN = 4.0  # a frame pair whose brightness ratio exceeds this is a light change, not comparable


@dataclass(frozen=True, slots=True)
class Motion:
    """How much of the picture changed between consecutive frames, and where."""

    amount: float  # mean fraction of pixels that changed per compared pair, 0..1
    columns: tuple[float, float, float]  # share of all change in the left, centre and right thirds
    rows: tuple[float, float, float]  # share of all change in the top, middle and bottom thirds
    drift: float  # horizontal travel of the changing area over the window, fraction of width (+ = right)
    pairs: int  # frame pairs compared; 0 means motion could not be measured


def _shares(counts: np.ndarray, axis: int) -> tuple[float, float, float]:
    total = float(counts.sum())
    parts = [float(p.sum()) / total if total else 0.0 for p in np.array_split(counts, 3, axis=axis)]
    return parts[0], parts[1], parts[2]


def _match_tone(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Map ``a``'s grey levels onto ``b``'s by quantiles: undoes a light or exposure change, clipping included."""
    levels = np.linspace(0, 100, 33)
    qa, qb = np.percentile(a, levels), np.percentile(b, levels)
    qa = np.maximum.accumulate(qa + levels * 1e-6)  # strictly increasing, as np.interp needs
    return np.interp(a, qa, qb).astype(np.float32)


def measure_motion(images: Sequence[np.ndarray]) -> Motion:
    """Threshold frame differences on thumbnails; brightness is matched first so light is not motion."""
    greys = [grey_thumbnail(im) for im in images]
    counts = np.zeros_like(greys[0]) if greys else np.zeros((1, 1), np.float32)
    fractions: list[float] = []
    centres: list[float] = []
    for a, b in pairwise(greys):
        mean_a, mean_b = float(a.mean()), float(b.mean())
        gain = (mean_b + 1.0) / (mean_a + 1.0)
        if not 1 / _MAX_GAIN <= gain <= _MAX_GAIN:
            continue  # the light changed too much to compare structure
        threshold = _DIFF_THRESHOLD
        if abs(mean_b - mean_a) > _TONE_SHIFT:
            a = _match_tone(a, b)
            # clipping and colour casts leave residue after matching, so only strong motion counts
            threshold += 0.5 * abs(mean_b - mean_a)
        mask = np.abs(b - a) > threshold
        fractions.append(float(mask.mean()))
        counts += mask
        if mask.mean() >= MOTION_NONE:
            centres.append(float(np.nonzero(mask)[1].mean() + 0.5) / mask.shape[1])
    steps = np.diff(centres)
    drift = 0.0
    if len(centres) >= 3 and (np.all(steps > 0) or np.all(steps < 0)):
        drift = centres[-1] - centres[0]
    return Motion(
        amount=float(np.mean(fractions)) if fractions else 0.0,
        columns=_shares(counts, axis=1),
        rows=_shares(counts, axis=0),
        drift=drift,
        pairs=len(fractions),
    )
