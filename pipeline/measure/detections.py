"""Faces and whole standing people, claimed only above a confidence tuned on labelled photos.

A detector this OpenCV build lacks (OpenCV 5 ships no Haar cascades or HOG people detector) finds
nothing and says so in ``detector_notes``, so nothing built on it claims what it cannot see.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from pipeline.measure.pictures import Bounds, as_rgb, fit_width

# Detectors run on a downscaled copy so one call stays well under 100 ms on one core.
_FACE_WIDTH = 560
_PEOPLE_WIDTH = 480
# Confidence a detection needs before it is said at all, tuned on the labelled real photos of
# tests/fixtures/labelled_photos.yaml (tests/unit/test_opencv_narrator.py prints precision and recall):
# photos without a face reach 5 cascade neighbours, nearly all real faces 8 or more; the
# scikit-image logo scores 0.83 as a standing person, the astronaut in a video frame 0.98 to 1.33.
_FACE_MIN_NEIGHBOURS = 8
_PEOPLE_MIN_WEIGHT = 0.95


@dataclass(frozen=True, slots=True)
class Box:
    """A detection in fractions (0..1) of image width and height, so it means the same at any scale."""

    x: float
    y: float
    w: float
    h: float

    @property
    def centre(self) -> tuple[float, float]:
        """(x, y) of the box centre, as fractions of the image."""
        return self.x + self.w / 2, self.y + self.h / 2


def _boxes(rects: Sequence[Sequence[int]], shape: tuple[int, ...]) -> list[Box]:
    """Pixel rectangles to fractions, left to right; a box centred inside a bigger one is the same thing."""
    h, w = shape[:2]
    kept: list[Box] = []
    for x, y, bw, bh in sorted(rects, key=lambda r: -int(r[2]) * int(r[3])):
        left, top = max(0.0, float(x) / w), max(0.0, float(y) / h)  # HOG padding can reach past the edge
        right, bottom = min(1.0, float(x + bw) / w), min(1.0, float(y + bh) / h)
        box = Box(left, top, right - left, bottom - top)
        cx, cy = box.centre
        if not any(k.x <= cx <= k.x + k.w and k.y <= cy <= k.y + k.h for k in kept):
            kept.append(box)
    return sorted(kept, key=lambda b: b.x)


@lru_cache(maxsize=1)
def _face_detector() -> tuple[cv2.CascadeClassifier | None, str]:
    """The Haar frontal face cascade, or None and why (OpenCV 5 wheels no longer bundle it)."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(folder or "") / "haarcascade_frontalface_alt2.xml"
    if not folder or not path.is_file() or not hasattr(cv2, "CascadeClassifier"):
        return None, "no face detection: this OpenCV build ships no Haar cascades (use opencv-python-headless<5)"
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        return None, f"no face detection: could not load {path.name}"
    return cascade, ""


@lru_cache(maxsize=1)
def _people_detector() -> tuple[cv2.HOGDescriptor | None, str]:
    """The HOG people detector, or None and why (OpenCV 5 dropped the default people model)."""
    hog_class = getattr(cv2, "HOGDescriptor", None)
    default = getattr(cv2, "HOGDescriptor_getDefaultPeopleDetector", None) or getattr(
        hog_class, "getDefaultPeopleDetector", None
    )
    if hog_class is None or default is None:
        return None, "no people detection: this OpenCV build has no HOG people detector (use opencv-python-headless<5)"
    try:
        hog = hog_class()
        hog.setSVMDetector(default())
    except cv2.error as exc:
        return None, f"no people detection: {' '.join(str(exc).split())}"
    return hog, ""


_FACE_LOCK = threading.Lock()  # cascade and HOG objects are shared; OpenCV does not promise thread safety
_PEOPLE_LOCK = threading.Lock()


def faces_available() -> bool:
    """Whether ``detect_faces`` can see anything in this OpenCV build."""
    return _face_detector()[0] is not None


def people_available() -> bool:
    """Whether ``detect_people`` can see anything in this OpenCV build."""
    return _people_detector()[0] is not None


def detector_notes() -> list[str]:
    """One line per missing detector, for status lines: say what cannot be seen."""
    return [note for _, note in (_face_detector(), _people_detector()) if note]


def detect_faces(image: np.ndarray) -> list[Box]:
    """Confident frontal faces, left to right; on the 560 px copy one must be 5% of the frame width."""
    cascade, _ = _face_detector()
    if cascade is None:
        return []
    grey = cv2.cvtColor(fit_width(as_rgb(image), _FACE_WIDTH), cv2.COLOR_RGB2GRAY)
    with _FACE_LOCK:
        rects = cascade.detectMultiScale(grey, scaleFactor=1.2, minNeighbors=_FACE_MIN_NEIGHBOURS, minSize=(28, 28))
    return _boxes(list(rects), grey.shape)


def detect_people(image: np.ndarray) -> list[Box]:
    """Confident whole standing people, left to right; on the 480 px copy one must be ~40% of the frame height."""
    hog, _ = _people_detector()
    if hog is None:
        return []
    small = np.ascontiguousarray(fit_width(as_rgb(image), _PEOPLE_WIDTH))
    if small.shape[0] < 128 or small.shape[1] < 64:
        return []
    with _PEOPLE_LOCK:
        rects, weights = hog.detectMultiScale(small, winStride=(8, 8), padding=(8, 8), scale=1.15)
    kept = [r for r, w in zip(list(rects), np.ravel(weights), strict=True) if w >= _PEOPLE_MIN_WEIGHT]
    return _boxes(kept, small.shape)


def boxes_inside(boxes: Sequence[Box], bounds: Bounds | None) -> tuple[Box, ...]:
    """The detections centred inside ``bounds`` (all of them for None)."""
    if bounds is None:
        return tuple(boxes)
    left, top, right, bottom = bounds
    return tuple(b for b in boxes if left <= b.centre[0] <= right and top <= b.centre[1] <= bottom)
