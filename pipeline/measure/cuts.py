"""Where a new shot starts in a window of frames, telling a cut from the light alone changing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.measure.pictures import grey_thumbnail, rgb_thumbnail
from pipeline.scene import SceneScorer

_SAME_LAYOUT = 0.6  # grey rank correlation across a "cut" above which it was only the light changing


def _ranks(values: np.ndarray) -> np.ndarray:
    flat = values.ravel()
    return np.searchsorted(np.sort(flat), flat).astype(np.float32)  # ties share a rank


def only_light_changed(a: np.ndarray, b: np.ndarray) -> bool:
    """Same layout and hue, only brighter or darker (a lamp, exposure, even clipping): not a new shot.

    Layout is compared by rank correlation, which any brightness curve leaves alone; hue only
    where neither picture is blown out or black, since clipping changes colour by itself.
    """
    ta, tb = (rgb_thumbnail(x).astype(np.float32) for x in (a, b))
    usable = (ta.max(axis=2) < 250) & (tb.max(axis=2) < 250) & (ta.sum(axis=2) > 30) & (tb.sum(axis=2) > 30)
    if usable.mean() >= 0.2:
        ca, cb = ta[usable].mean(axis=0), tb[usable].mean(axis=0)
        if float(np.abs(ca / max(float(ca.sum()), 1.0) - cb / max(float(cb.sum()), 1.0)).max()) >= 0.05:
            return False
    ga, gb = grey_thumbnail(a), grey_thumbnail(b)
    if ga.std() <= 2 or gb.std() <= 2:
        return bool(ga.std() <= 2 and gb.std() <= 2)  # two flat pictures of one hue: only the light differs
    unclipped = (ga > 5) & (ga < 250) & (gb > 5) & (gb < 250)
    if unclipped.mean() >= 0.1:
        ga, gb = ga[unclipped], gb[unclipped]
    ra, rb = _ranks(ga), _ranks(gb)
    if ra.std() == 0 or rb.std() == 0:
        return False
    return float(np.corrcoef(ra, rb)[0, 1]) >= _SAME_LAYOUT


def find_cuts(images: Sequence[np.ndarray], times: Sequence[float]) -> list[int]:
    """Indices of frames that start a new shot, by ``SceneScorer``; a pure light change is not a cut."""
    scorer = SceneScorer()
    thumbs = [rgb_thumbnail(im) for im in images]
    cuts = []
    for i, (thumb, t) in enumerate(zip(thumbs, times, strict=True)):
        if scorer.score(thumb, t).cut and not only_light_changed(thumbs[i - 1], thumb):
            cuts.append(i)
    return cuts
