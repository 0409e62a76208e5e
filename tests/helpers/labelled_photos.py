"""Labelled real photos for scoring the offline narrator's face and person claims.

The photos ship inside the scikit-image wheel (``tests/fixtures/labelled_photos.yaml`` says what
each shows). Each one is also scored mirrored, at half size and inside a 1280×720 video frame, with
its labels moved along, so one photo gives several honest samples at the sizes and places a video
shows it. LFW face and non-face crops, enlarged, add many faces of different people.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pipeline.measure.detections import Box

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "labelled_photos.yaml"
Rect = tuple[float, float, float, float]  # left, top, right, bottom as fractions of the picture


@dataclass(frozen=True)
class Sample:
    """One picture and where its faces and people really are; None: not labelled for that claim."""

    name: str
    image: np.ndarray
    faces: tuple[Rect, ...] | None
    people: tuple[Rect, ...] | None


@dataclass(frozen=True)
class Score:
    """Claims checked against labels: a claim is right when its centre lies in an unclaimed label."""

    right: int
    wrong: int
    missed: int
    wrong_in: tuple[str, ...]

    @property
    def precision(self) -> float:
        return self.right / (self.right + self.wrong) if self.right + self.wrong else 1.0

    @property
    def recall(self) -> float:
        return self.right / (self.right + self.missed) if self.right + self.missed else 1.0

    def __str__(self) -> str:
        claims = self.right + self.wrong
        return (
            f"precision {self.precision:.2f} ({self.right}/{claims} claims right), "
            f"recall {self.recall:.2f} ({self.right}/{self.right + self.missed} found)"
        )


def _rgb(image: np.ndarray) -> np.ndarray:
    """skimage ships bool, float and uint8, grey, RGB and RGBA: all become uint8 RGB."""
    if image.dtype != np.uint8:
        image = (image.astype(np.float64) * (255 / max(float(image.max()), 1e-9))).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(image[..., :3])


def _load(data: object, name: str) -> np.ndarray:
    image = getattr(data, name)()
    return _rgb(image[0] if isinstance(image, tuple) else image)  # stereo_motorcycle: (left, right, disparity)


def _variants(name: str, image: np.ndarray, labels: dict[str, tuple[Rect, ...]]) -> Iterator[Sample]:
    """The photo as shipped, mirrored, at half size, and in a 1280×720 frame: as is on the left, centre
    and right (shrunk only to fit), and enlarged to the frame's height."""
    yield Sample(name, image, labels["face"], labels["person"])

    def moved(f: Callable[[Rect], Rect]) -> dict[str, tuple[Rect, ...]]:
        return {k: tuple(f(r) for r in v) for k, v in labels.items()}

    mirrored = moved(lambda r: (1 - r[2], r[1], 1 - r[0], r[3]))
    yield Sample(f"{name} mirrored", np.ascontiguousarray(image[:, ::-1]), mirrored["face"], mirrored["person"])
    h, w = image.shape[:2]
    half = cv2.resize(image, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    yield Sample(f"{name} half size", half, labels["face"], labels["person"])
    for where, scale in (("left", 1.0), ("centre", 1.0), ("right", 1.0), ("centre, enlarged", 720 / h)):
        scale = min(scale, 720 / h, 1280 / w)
        small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        sh, sw = small.shape[:2]
        top, left = (720 - sh) // 2, {"left": 0, "right": 1280 - sw}.get(where, (1280 - sw) // 2)
        frame = np.full((720, 1280, 3), 40, np.uint8)
        frame[top : top + sh, left : left + sw] = small

        def to_frame(r: Rect, left: int = left, top: int = top, sw: int = sw, sh: int = sh) -> Rect:
            x0, y0, x1, y1 = r
            return ((left + x0 * sw) / 1280, (top + y0 * sh) / 720, (left + x1 * sw) / 1280, (top + y1 * sh) / 720)

        framed = moved(to_frame)
        yield Sample(f"{name} in a 1280×720 frame, {where}", frame, framed["face"], framed["person"])


def _crop_samples(data: object, faces: Sequence[int], non_faces: Sequence[int]) -> Iterator[Sample]:
    """LFW crops enlarged 4× onto a grey 640×360 frame, left, centre or right by turns."""
    crops = data.lfw_subset()
    for label, (first, end) in ((True, faces), (False, non_faces)):
        for i in range(first, end):
            crop = cv2.resize(_rgb(crops[i]), (100, 100), interpolation=cv2.INTER_CUBIC)
            frame = np.full((360, 640, 3), 128, np.uint8)
            left = (40, 270, 500)[i % 3]
            frame[130:230, left : left + 100] = crop
            box = (left / 640, 130 / 360, (left + 100) / 640, 230 / 360)
            yield Sample(f"lfw_subset[{i}]", frame, (box,) if label else (), None)


def samples() -> list[Sample]:
    """Every labelled sample; skips the test when scikit-image is not installed."""
    data = pytest.importorskip("skimage.data")
    fixture = yaml.safe_load(FIXTURE.read_text())
    out: list[Sample] = []
    for name, entry in fixture["photos"].items():
        labels = {k: tuple(tuple(r) for r in entry[k]) for k in ("face", "person")}
        out.extend(_variants(name, _load(data, name), labels))
    out.extend(_crop_samples(data, fixture["crops"]["faces"], fixture["crops"]["non_faces"]))
    return out


def score(samples: Sequence[Sample], claim: str, detect: Callable[[np.ndarray], Sequence[Box]]) -> Score:
    """Run ``detect`` on every sample labelled for ``claim`` ("faces" or "people") and count."""
    right = wrong = missed = 0
    wrong_in: list[str] = []
    for sample in samples:
        truth = getattr(sample, claim)
        if truth is None:
            continue
        free = list(truth)
        for box in detect(sample.image):
            cx, cy = box.centre
            hit = next((r for r in free if r[0] <= cx <= r[2] and r[1] <= cy <= r[3]), None)
            if hit is None:
                wrong += 1
                wrong_in.append(sample.name)
            else:
                right += 1
                free.remove(hit)
        missed += len(free)
    return Score(right, wrong, missed, tuple(wrong_in))
