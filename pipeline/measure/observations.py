"""Everything measured on one window of frames, as one value: what a comment (or a rule) is about."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.measure.colour import dominant_colour
from pipeline.measure.cuts import find_cuts
from pipeline.measure.detections import (
    Box,
    boxes_inside,
    detect_faces,
    detect_people,
    faces_available,
    people_available,
)
from pipeline.measure.light import Light, measure_light
from pipeline.measure.motion import Motion, measure_motion
from pipeline.measure.pictures import Bounds, crop, rgb_thumbnail


@dataclass(frozen=True, slots=True)
class Observations:
    """Everything measured for one window; ``None`` for a detector this OpenCV build lacks, or not asked for."""

    frame_count: int
    shot_frames: int  # frames since the last cut (all of them when there was none)
    cuts: int
    motion: Motion
    light: Light
    colour_before: str | None
    colour_after: str | None
    faces: tuple[Box, ...] | None
    people: tuple[Box, ...] | None


def observe(
    images: Sequence[np.ndarray],
    times: Sequence[float],
    bounds: Bounds | None = None,
    detect: Collection[str] = ("face", "person"),
) -> Observations:
    """Measure a window (oldest→newest); after a cut only the new shot counts for motion, light, colour.

    Cuts are found on the whole picture; everything else only inside ``bounds``, if given. The detectors run
    (tens of ms each on the newest frame) only for what ``detect`` names: a motion rule needs neither."""
    if not images:
        return Observations(0, 0, 0, measure_motion([]), measure_light([]), None, None, None, None)
    thumbs = [rgb_thumbnail(im) for im in images]  # once: every measure below re-thumbnails for free
    cuts = find_cuts(thumbs, times)
    start = cuts[-1] if cuts else 0
    shot = thumbs[start:] if bounds is None else [rgb_thumbnail(crop(im, bounds)) for im in images[start:]]
    newest = images[-1]
    return Observations(
        frame_count=len(images),
        shot_frames=len(shot),
        cuts=len(cuts),
        motion=measure_motion(shot),
        light=measure_light(shot),
        colour_before=dominant_colour(shot[0]),
        colour_after=dominant_colour(shot[-1]),
        faces=boxes_inside(detect_faces(newest), bounds) if "face" in detect and faces_available() else None,
        people=boxes_inside(detect_people(newest), bounds) if "person" in detect and people_available() else None,
    )
