"""Offline narrator: says what OpenCV measured (motion, cuts, light, colour, faces, people).

It is what the app falls back to with no GPU and no model, so it has to be a useful camera
monitor on one CPU core and strictly honest: every sentence reports a measurement, a face or
person is claimed only above a confidence tuned on labelled photos, and a detector this OpenCV
build lacks (OpenCV 5 ships no Haar cascades or HOG people detector) is named in ``description``
and never stands behind a claim. It talks the way the chosen profile does and follows the words
of a live instruction it can measure (a region, people, faces, motion, light, colour), saying which
through ``OpenCVNarrator.understands``.
"""

from __future__ import annotations

import re
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from pipeline.backends.base import Backend, Capabilities, CommentRequest
from pipeline.config import PROFILES_DIR
from pipeline.errors import ConfigError
from pipeline.prompts import load_profiles
from pipeline.scene import SceneScorer, thumbnail

if TYPE_CHECKING:
    from pipeline.config import Settings

# Motion, measured on the shared 64×36 scene thumbnail (INTER_AREA averaging also removes sensor noise).
_DIFF_THRESHOLD = 16  # grey levels (of 255) a thumbnail pixel must change by, after light compensation
_MOTION_NONE = 0.0015  # mean changed fraction per frame pair below which nothing counts as moving
_MOTION_LITTLE = 0.02
_MOTION_LOTS = 0.08
_TONE_SHIFT = 4.0  # mean grey change between two frames above which their tones are matched first
_MAX_GAIN = 4.0  # a frame pair whose brightness ratio exceeds this is a light change, not comparable
_DOMINANT_SHARE = 0.6  # share of all change (or of one axis) that makes a region "where" it happens
_MIN_DRIFT = 0.2  # horizontal travel (fraction of width) before the movement is said to be heading somewhere
# Light and colour.
_SUDDEN_LIGHT = 40.0  # grey levels between two frames that make a change sudden
_GRADUAL_LIGHT = 20.0  # grey levels over the window that make a change worth saying
_DARK, _BRIGHT = 35.0, 215.0
_SAME_LAYOUT = 0.6  # grey rank correlation across a "cut" above which it was only the light changing
# Detectors run on a downscaled copy so one call stays well under 100 ms on one core.
_FACE_WIDTH = 560
_PEOPLE_WIDTH = 480
# Confidence a detection needs before it is said at all, tuned on the labelled real photos of
# tests/fixtures/labelled_photos.yaml (tests/test_opencv_narrator.py prints precision and recall):
# photos without a face reach 5 cascade neighbours, nearly all real faces 8 or more; the
# scikit-image logo scores 0.83 as a standing person, the astronaut in a video frame 0.98 to 1.33.
_FACE_MIN_NEIGHBOURS = 8
_PEOPLE_MIN_WEIGHT = 0.95

_NUMBERS = ("No", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten")
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


@dataclass(frozen=True, slots=True)
class Motion:
    """How much of the picture changed between consecutive frames, and where."""

    amount: float  # mean fraction of pixels that changed per compared pair, 0..1
    columns: tuple[float, float, float]  # share of all change in the left, centre and right thirds
    rows: tuple[float, float, float]  # share of all change in the top, middle and bottom thirds
    drift: float  # horizontal travel of the changing area over the window, fraction of width (+ = right)
    pairs: int  # frame pairs compared; 0 means motion could not be measured


@dataclass(frozen=True, slots=True)
class Light:
    """Mean brightness (0..255) at the start and end of the window and the largest frame-to-frame step."""

    before: float
    after: float
    largest_step: float


@dataclass(frozen=True, slots=True)
class Observations:
    """Everything measured for one comment; ``None`` for a detector this OpenCV build lacks."""

    frame_count: int
    shot_frames: int  # frames since the last cut (all of them when there was none)
    cuts: int
    motion: Motion
    light: Light
    colour_before: str | None
    colour_after: str | None
    faces: tuple[Box, ...] | None
    people: tuple[Box, ...] | None


# Instruction words the narrator can act on. A region narrows every measurement to that part of
# the picture; topics limit the comment to those measurements.
_COLUMNS = {"left": (0.0, 1 / 3), "centre": (1 / 3, 2 / 3), "right": (2 / 3, 1.0)}
_ROWS = {"top": (0.0, 1 / 3), "bottom": (2 / 3, 1.0)}
_REGION_WORDS = {
    "left": r"left",
    "right": r"right",
    "centre": r"cent(?:re|er)|middle",
    "top": r"top|upper",
    "bottom": r"bottom|lower",
}
_TOPICS = {  # topic → (the words that ask for it, what the narrator calls it)
    "people": (r"people|persons?|humans?|pedestrians?|someone|somebody|anyone|anybody", "people"),
    "faces": (r"faces?", "faces"),
    "motion": (r"motion|move\w*|moving", "movement"),
    "light": (r"light\w*|bright\w*|dark\w*", "light"),
    "colour": (r"colou?r\w*", "colour"),
}
_ASKS = "The viewer asks you to: "  # how build_prompt hands live instructions to every backend


@dataclass(frozen=True, slots=True)
class Focus:
    """What live instructions asked for that this narrator can measure; empty means everything."""

    column: str | None = None  # a key of _COLUMNS
    row: str | None = None  # a key of _ROWS
    topics: frozenset[str] = field(default_factory=frozenset)  # keys of _TOPICS

    @property
    def bounds(self) -> tuple[float, float, float, float] | None:
        """(left, top, right, bottom) fractions of the picture to measure, or None for all of it."""
        if self.column is None and self.row is None:
            return None
        left, right = _COLUMNS.get(self.column or "", (0.0, 1.0))
        top, bottom = _ROWS.get(self.row or "", (0.0, 1.0))
        return left, top, right, bottom

    @property
    def where(self) -> str | None:
        """The region in words ("on the left", "near the top right"), or None for the whole picture."""
        bounds = self.bounds
        if bounds is None:
            return None
        left, top, right, bottom = bounds
        return place(
            None if self.column is None else (left + right) / 2, None if self.row is None else (top + bottom) / 2
        )


def _has(pattern: str, text: str) -> bool:
    return re.search(rf"\b(?:{pattern})\b", text, re.IGNORECASE) is not None


def read_focus(instructions: Sequence[str]) -> Focus:
    """Merge instructions, oldest first: the latest one naming a region sets it, topics add up.

    Topics whose detector this OpenCV build lacks are left out, so nothing promises what cannot be seen."""
    column = row = None
    topics: set[str] = set()
    for text in instructions:
        named = [name for name, pattern in _REGION_WORDS.items() if _has(pattern, text)]
        if named:
            column = next((n for n in named if n in _COLUMNS), None)
            row = next((n for n in named if n in _ROWS), None)
        topics.update(topic for topic, (pattern, _) in _TOPICS.items() if _has(pattern, text))
    if not people_available():
        topics.discard("people")
    if not faces_available():
        topics.discard("faces")
    return Focus(column, row, frozenset(topics))


def _join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def focus_phrase(focus: Focus) -> str | None:
    """What the narrator will do, as a verb phrase ("focus on people on the left"); None: nothing."""
    nouns = [noun for topic, (_, noun) in _TOPICS.items() if topic in focus.topics]
    where = focus.where
    if nouns:
        return f"focus on {_join(nouns)}" + (f" {where}" if where else "")
    return f"focus on what happens {where}" if where else None


def instructions_in(user_prompt: str) -> list[str]:
    """The live instructions in a prompt built by ``build_prompt`` (one line, joined with '; ')."""
    for line in user_prompt.splitlines():
        if line.startswith(_ASKS):
            return line[len(_ASKS) :].split("; ")
    return []


# --------------------------------------------------------------------------- measurements


def _rgb(image: np.ndarray) -> np.ndarray:
    """Accept grey or RGBA pictures too, so an odd source never crashes the fallback."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    return image


def _grey_thumb(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(thumbnail(_rgb(image)), cv2.COLOR_RGB2GRAY).astype(np.float32)


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
    greys = [_grey_thumb(im) for im in images]
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
        if mask.mean() >= _MOTION_NONE:
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


def mean_brightness(image: np.ndarray) -> float:
    """Mean grey level 0..255 of the thumbnail (what a person would call how light the picture is)."""
    return float(_grey_thumb(image).mean())


def measure_light(images: Sequence[np.ndarray]) -> Light:
    """Brightness at both ends of the window and the biggest single jump (sudden vs gradual)."""
    levels = [mean_brightness(im) for im in images] or [0.0]
    step = float(np.abs(np.diff(levels)).max()) if len(levels) > 1 else 0.0
    return Light(levels[0], levels[-1], step)


def dominant_colour(image: np.ndarray) -> str | None:
    """The colour name that covers most of the picture, or None when no single colour dominates."""
    hsv = cv2.cvtColor(thumbnail(_rgb(image)), cv2.COLOR_RGB2HSV)
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


def _ranks(values: np.ndarray) -> np.ndarray:
    flat = values.ravel()
    return np.searchsorted(np.sort(flat), flat).astype(np.float32)  # ties share a rank


def only_light_changed(a: np.ndarray, b: np.ndarray) -> bool:
    """Same layout and hue, only brighter or darker (a lamp, exposure, even clipping): not a new shot.

    Layout is compared by rank correlation, which any brightness curve leaves alone; hue only
    where neither picture is blown out or black, since clipping changes colour by itself.
    """
    ta, tb = (thumbnail(_rgb(x)).astype(np.float32) for x in (a, b))
    usable = (ta.max(axis=2) < 250) & (tb.max(axis=2) < 250) & (ta.sum(axis=2) > 30) & (tb.sum(axis=2) > 30)
    if usable.mean() >= 0.2:
        ca, cb = ta[usable].mean(axis=0), tb[usable].mean(axis=0)
        if float(np.abs(ca / max(float(ca.sum()), 1.0) - cb / max(float(cb.sum()), 1.0)).max()) >= 0.05:
            return False
    ga, gb = _grey_thumb(a), _grey_thumb(b)
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
    thumbs = [thumbnail(_rgb(im)) for im in images]
    cuts = []
    for i, (thumb, t) in enumerate(zip(thumbs, times, strict=True)):
        if scorer.score(thumb, t).cut and not only_light_changed(thumbs[i - 1], thumb):
            cuts.append(i)
    return cuts


def _fit_width(image: np.ndarray, width: int) -> np.ndarray:
    """Downscale (never upscale) to ``width``, keeping the aspect ratio."""
    h, w = image.shape[:2]
    if w <= width:
        return image
    return cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


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
    """One line per missing detector, for status lines: the narrator says what it cannot see."""
    return [note for _, note in (_face_detector(), _people_detector()) if note]


def detect_faces(image: np.ndarray) -> list[Box]:
    """Confident frontal faces, left to right; on the 560 px copy one must be 5% of the frame width."""
    cascade, _ = _face_detector()
    if cascade is None:
        return []
    grey = cv2.cvtColor(_fit_width(_rgb(image), _FACE_WIDTH), cv2.COLOR_RGB2GRAY)
    with _FACE_LOCK:
        rects = cascade.detectMultiScale(grey, scaleFactor=1.2, minNeighbors=_FACE_MIN_NEIGHBOURS, minSize=(28, 28))
    return _boxes(list(rects), grey.shape)


def detect_people(image: np.ndarray) -> list[Box]:
    """Confident whole standing people, left to right; on the 480 px copy one must be ~40% of the frame height."""
    hog, _ = _people_detector()
    if hog is None:
        return []
    small = np.ascontiguousarray(_fit_width(_rgb(image), _PEOPLE_WIDTH))
    if small.shape[0] < 128 or small.shape[1] < 64:
        return []
    with _PEOPLE_LOCK:
        rects, weights = hog.detectMultiScale(small, winStride=(8, 8), padding=(8, 8), scale=1.15)
    kept = [r for r, w in zip(list(rects), np.ravel(weights), strict=True) if w >= _PEOPLE_MIN_WEIGHT]
    return _boxes(kept, small.shape)


def _crop(image: np.ndarray, bounds: tuple[float, float, float, float]) -> np.ndarray:
    h, w = image.shape[:2]
    left, top, right, bottom = bounds
    return image[round(top * h) : max(round(bottom * h), 1), round(left * w) : max(round(right * w), 1)]


def _inside(boxes: list[Box], bounds: tuple[float, float, float, float] | None) -> tuple[Box, ...]:
    """The detections centred inside ``bounds`` (all of them for None)."""
    if bounds is None:
        return tuple(boxes)
    left, top, right, bottom = bounds
    return tuple(b for b in boxes if left <= b.centre[0] <= right and top <= b.centre[1] <= bottom)


def observe(images: Sequence[np.ndarray], times: Sequence[float], focus: Focus | None = None) -> Observations:
    """Measure a window (oldest→newest); after a cut only the new shot counts for motion, light, colour.

    Cuts are found on the whole picture; everything else only inside ``focus``'s region, if it names one."""
    if not images:
        return Observations(0, 0, 0, measure_motion([]), measure_light([]), None, None, None, None)
    bounds = focus.bounds if focus else None
    thumbs = [thumbnail(_rgb(im)) for im in images]  # once: every measure below re-thumbnails for free
    cuts = find_cuts(thumbs, times)
    start = cuts[-1] if cuts else 0
    shot = thumbs[start:] if bounds is None else [thumbnail(_rgb(_crop(im, bounds))) for im in images[start:]]
    newest = images[-1]
    return Observations(
        frame_count=len(images),
        shot_frames=len(shot),
        cuts=len(cuts),
        motion=measure_motion(shot),
        light=measure_light(shot),
        colour_before=dominant_colour(shot[0]),
        colour_after=dominant_colour(shot[-1]),
        faces=_inside(detect_faces(newest), bounds) if faces_available() else None,
        people=_inside(detect_people(newest), bounds) if people_available() else None,
    )


# --------------------------------------------------------------------------- wording


# Wording per profile (profiles/*.yaml, by file name). Each profile overrides some phrases of the
# neutral "narrator" set and falls back to it for the rest; every phrase still states a measurement.
_WORDING: dict[str, dict[str, tuple[str, ...]]] = {
    "narrator": {
        "still": ("Nothing is moving.", "No movement.", "Nothing moves."),
        "same": ("Still the same scene; nothing is moving.", "Nothing has changed; nothing is moving."),
        "little": ("A little movement {w}.", "Something small is moving {w}.", "Slight movement {w}."),
        "some": ("Some movement {w}.", "Something is moving {w}.", "Movement {w}."),
        "lots": ("Lots of movement {w}.", "A lot is moving {w}.", "Busy movement {w}."),
        "scene": ("The new scene is {d}.", "Now a new view, {d}."),
        "faces": ("{n}, {w}.",),
        "people": ("{n} {w}.",),
    },
    "sports": {
        "still": ("A lull: nothing is moving.", "All quiet out there; nothing moves."),
        "same": ("Still nothing happening out there.", "Same picture, no movement at all."),
        "little": ("A touch of movement {w}.", "Something stirs {w}."),
        "some": ("Action {w}!", "Play is moving {w}!"),
        "lots": ("Big action {w}!", "It's all happening {w}!"),
        "scene": ("New angle: {d}.", "We switch to a new view, {d}."),
        "faces": ("{n} in view, {w}.",),
        "people": ("{n} in the picture, {w}!",),
    },
    "security": {
        "still": ("No motion.",),
        "same": ("No change. No motion.",),
        "little": ("Minor motion {w}.",),
        "some": ("Motion {w}.",),
        "lots": ("Heavy motion {w}.",),
        "scene": ("View changed: {d}.",),
        "faces": ("{n} detected {w}.",),
        "people": ("{n} detected {w}.",),
    },
    "nature": {
        "still": ("All is still.", "A hush; nothing stirs."),
        "same": ("The scene rests, unchanged and still.", "Nothing stirs; the scene is unchanged."),
        "little": ("A small stir {w}.", "The faintest movement {w}."),
        "some": ("Something stirs {w}.", "Movement {w}, unhurried."),
        "lots": ("A flurry of activity {w}.", "Everything is in motion {w}."),
        "scene": ("We find ourselves somewhere new, {d}.",),
    },
    "sarcastic": {
        "still": ("Riveting: nothing is moving.", "Thrilling stuff. Nothing moves."),
        "same": ("Still the same scene. Gripping.", "Nothing has changed. Shocking."),
        "little": ("Hold on, a little movement {w}.",),
        "some": ("Oh look, movement {w}.",),
        "lots": ("Wow, so much going on {w}.",),
        "scene": ("Finally, something new: {d}.",),
    },
}


def _pick(options: Sequence[str], seed: int, key: str) -> str:
    """A template chosen by (seed, key): varied between comments, identical for the same input."""
    return options[zlib.crc32(f"{seed}:{key}".encode()) % len(options)]


def _say(style: str, key: str, seed: int, **fields: str) -> str:
    """The profile's phrase for ``key`` (the neutral one if it has none), filled in."""
    options = _WORDING.get(style, {}).get(key) or _WORDING["narrator"][key]
    return _pick(options, seed, key).format(**fields)


def place(x: float | None, y: float | None) -> str:
    """Words for a position given as fractions of the picture; None means "spread along that axis"."""
    col = None if x is None else ("left", "centre", "right")[min(int(x * 3), 2)]
    row = None if y is None else ("top", "middle", "bottom")[min(int(y * 3), 2)]
    if row in (None, "middle"):
        if col is None:
            return "in several places"
        return "in the centre" if col == "centre" else f"on the {col}"
    if col in (None, "centre"):
        return f"near the {row}"
    return f"near the {row} {col}"


def _where(motion: Motion) -> str:
    """Where the change is: one third when it dominates, two neighbouring thirds, or spread out."""
    cols, rows = motion.columns, motion.rows
    col = None
    if max(cols) >= _DOMINANT_SHARE:
        col = ("left", "centre", "right")[int(np.argmax(cols))]
    elif cols[0] + cols[1] >= 0.8:
        col = "left of centre"
    elif cols[1] + cols[2] >= 0.8:
        col = "right of centre"
    row = {0: "top", 2: "bottom"}.get(int(np.argmax(rows))) if max(rows) >= _DOMINANT_SHARE else None
    if col is None:
        if row:
            return f"along the {row}" if abs(motion.drift) >= _MIN_DRIFT else f"near the {row}"
        if abs(motion.drift) >= _MIN_DRIFT:
            return "across the picture"
        return "all over the picture" if motion.amount >= _MOTION_LOTS and min(cols) >= 0.15 else "in several places"
    if col.endswith("of centre"):
        return f"near the {row}, {col}" if row else col
    if row:
        return f"near the {row}" if col == "centre" else f"near the {row} {col}"
    return "in the centre" if col == "centre" else f"on the {col}"


def _count(n: int, one: str, many: str) -> str:
    word = _NUMBERS[n] if n < len(_NUMBERS) else str(n)
    return f"{word} {one if n == 1 else many}"


def _places(boxes: Sequence[Box]) -> str:
    found = list(dict.fromkeys(place(*b.centre) for b in boxes))
    if len(found) > 2:
        return "across the picture"
    return " and ".join(found)


def _located(sentence: str, where: str | None) -> str:
    """Say which region a sentence measured ("It got darker on the left."), when it was only one."""
    if where is None:
        return sentence
    body = sentence.rstrip(".!")
    return f"{body} {where}{sentence[len(body) :]}"


def _motion_sentences(motion: Motion, seed: int, style: str, region: str | None) -> list[str]:
    if motion.amount < _MOTION_NONE:
        return [_located(_say(style, "still", seed), region)]
    key = "little" if motion.amount < _MOTION_LITTLE else "some" if motion.amount < _MOTION_LOTS else "lots"
    out = [_say(style, key, seed, w=region or _where(motion))]
    if abs(motion.drift) >= _MIN_DRIFT:
        side = "right" if motion.drift > 0 else "left"
        out.append(_pick(("It is heading {s}.", "It drifts to the {s}."), seed, "drift").format(s=side))
    return out


def _motion_or_wait(obs: Observations, seed: int, style: str, region: str | None) -> list[str]:
    """Motion sentences, or that one frame cannot show any; nothing when the light made frames incomparable."""
    if obs.motion.pairs:
        return _motion_sentences(obs.motion, seed, style, region)
    return ["Just one frame so far; nothing to compare yet."] if obs.shot_frames == 1 else []


def _light_sentence(light: Light, seed: int) -> str | None:
    delta = light.after - light.before
    if abs(delta) < _GRADUAL_LIGHT:
        return None
    if light.before < _DARK + 10 and light.after >= 80 and light.largest_step >= _SUDDEN_LIGHT:
        return _pick(("Much brighter now, as if a light came on.", "It suddenly got bright."), seed, "on")
    if light.after < _DARK + 10 and light.before >= 80 and light.largest_step >= _SUDDEN_LIGHT:
        return _pick(("The picture went dark, as if the lights went off.", "It suddenly went dark."), seed, "off")
    sudden = light.largest_step >= _SUDDEN_LIGHT and light.largest_step >= 0.6 * abs(delta)
    if delta > 0:
        options = ("It suddenly got brighter.",) if sudden else ("It is getting brighter.", "Brighter than before.")
    else:
        options = ("It suddenly got darker.",) if sudden else ("It is getting darker.", "Darker than before.")
    return _pick(options, seed, "light")


def _brightness(level: float) -> str:
    """How light the picture is, in words; bounds in grey levels 0..255."""
    for bound, words in ((_DARK, "very dark"), (80, "dim"), (170, "moderately lit"), (_BRIGHT, "bright")):
        if level < bound:
            return words
    return "very bright"


def _level_sentence(level: float) -> str | None:
    if level < _DARK:
        return "The picture is very dark."
    if level > _BRIGHT:
        return "The picture is very bright."
    return None


def _colour_sentence(before: str | None, after: str | None, seed: int, describe: bool) -> str | None:
    if after is not None and (describe or before is None):
        if describe:
            return _pick(("Mostly {c}.", "The picture is mostly {c}."), seed, "colour").format(c=after)
        return f"Now mostly {after}."
    if before is not None and after is not None and before != after:
        return _pick(("The colours shifted from {a} to {b}.", "From {a} to {b}."), seed, "shift").format(
            a=before, b=after
        )
    if before is not None and after is None:
        return f"No longer mostly {before}."
    return None


_DETECTIONS = {"faces": ("face", "faces"), "people": ("person", "people")}


def _detection_sentence(
    key: str, obs: Observations, seed: int, style: str, region: str | None, asked: bool
) -> str | None:
    """The count of confident detections; when asked for, also that there are none (if this build can look)."""
    boxes = obs.faces if key == "faces" else obs.people
    one, many = _DETECTIONS[key]
    if boxes:
        return _say(style, key, seed, n=_count(len(boxes), one, many), w=_places(boxes))
    if boxes is not None and asked:
        return f"No {many} {region or 'in view'}."
    return None


def _detections_sentences(obs: Observations, seed: int, style: str) -> list[str]:
    return [s for key in _DETECTIONS if (s := _detection_sentence(key, obs, seed, style, None, asked=False))]


def _scene_sentence(obs: Observations, seed: int, style: str) -> str:
    """A new shot described from what can be measured in one frame: light and colour."""
    looks = _brightness(obs.light.after) + (f" and mostly {obs.colour_after}" if obs.colour_after else "")
    return _say(style, "scene", seed, d=looks)


def _topic_sentences(topic: str, obs: Observations, seed: int, style: str, region: str | None) -> list[str]:
    """What the narrator says about one topic an instruction asked for; always something it measured."""
    if topic in _DETECTIONS:
        sentence = _detection_sentence(topic, obs, seed, style, region, asked=True)
        return [sentence] if sentence else []
    if topic == "motion":
        return _motion_or_wait(obs, seed, style, region)
    if topic == "light":
        change = _light_sentence(obs.light, seed)
        if change is None:
            level = _brightness(obs.light.after)
            change = (
                f"The light is steady; the picture is {level}." if obs.shot_frames > 1 else f"The picture is {level}."
            )
        return [_located(change, region)]
    colour = _colour_sentence(obs.colour_before, obs.colour_after, seed, describe=obs.colour_before == obs.colour_after)
    return [_located(colour or "No single colour dominates.", region)]


def compose(
    obs: Observations, seed: int, trigger: str = "active", style: str = "narrator", focus: Focus | None = None
) -> list[str]:
    """Sentences, most important first; each one states a measurement, nothing is guessed.

    ``style`` picks the profile's wording; ``focus`` limits the comment to the region and topics asked for.
    A cut is not announced (the UI already notes it): the comment describes the new scene instead."""
    if obs.frame_count == 0:
        return ["No picture yet."]
    focus = focus or Focus()
    region = focus.where
    if focus.topics:
        topical = [
            s for topic in _TOPICS if topic in focus.topics for s in _topic_sentences(topic, obs, seed, style, region)
        ]
        if topical:
            return topical
    detections = _detections_sentences(obs, seed, style)
    light_change = _light_sentence(obs.light, seed)
    if obs.cuts > 0 or trigger == "scene_cut":
        motion = _motion_sentences(obs.motion, seed, style, region) if obs.motion.pairs else []
        return [
            _located(_scene_sentence(obs, seed, style), region),
            *detections,
            *motion,
            *([_located(light_change, region)] if light_change else []),
        ]
    moving = obs.motion.amount >= _MOTION_NONE
    if obs.motion.pairs and not (moving or light_change) and obs.colour_before == obs.colour_after:
        level = _level_sentence(obs.light.after)
        return [_located(_say(style, "same", seed), region), *detections, *([_located(level, region)] if level else [])]
    sentences: list[str] = []
    if light_change:
        sentences.append(_located(light_change, region))
    sentences.extend(_motion_or_wait(obs, seed, style, region))
    sentences.extend(detections)
    describe = obs.shot_frames == 1
    if not light_change and describe and (level := _level_sentence(obs.light.after)):
        sentences.append(_located(level, region))
    if colour := _colour_sentence(obs.colour_before, obs.colour_after, seed, describe):
        sentences.append(_located(colour, region))
    return sentences


def limit_words(sentences: Sequence[str], max_words: int) -> str:
    """Whole sentences while they fit in ``max_words`` (a word ≈ a token); the first is always whole,
    since half a sentence read aloud says less than a few words too many."""
    kept: list[str] = []
    used = 0
    for sentence in sentences:
        words = len(sentence.split())
        if kept and used + words > max_words:
            break
        kept.append(sentence)
        used += words
    return " ".join(kept)


# --------------------------------------------------------------------------- backend


class OpenCVNarrator(Backend):
    """Describes the window from measurements alone: no weights, no GPU, starts instantly.

    It words comments the way the chosen profile talks (``_WORDING``, keyed by profile file name)
    and follows the parts of live instructions it can measure; ``understands`` tells the UI which.
    """

    name = "opencv"
    capabilities = Capabilities(images=True, video=False, audio_out=False, max_frames=16)

    def __init__(self, profiles_dir: Path = PROFILES_DIR) -> None:
        self._profiles_dir = profiles_dir

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenCVNarrator:
        """Nothing to load: profiles and detectors are read lazily on the first comment."""
        return cls(settings.profiles_dir)

    @property
    def description(self) -> str:
        """Engine summary plus any detector this OpenCV build lacks, so the UI never overstates it."""
        notes = detector_notes()
        return "OpenCV narrator (offline, no model)" + (f"; {'; '.join(notes)}" if notes else "")

    def understands(self, instruction: str) -> str | None:
        """What this narrator will do for a live instruction, as a verb phrase for the UI to show
        ("focus on people on the left"), or None when it understands none of it and ignores it."""
        return focus_phrase(read_focus([instruction]))

    @cached_property
    def _styles(self) -> dict[str, str]:
        """System prompt → profile file name: requests carry the profile's prompt, not its name."""
        try:
            profiles = load_profiles(self._profiles_dir)
        except ConfigError:
            return {}  # neutral wording; load_run_config already stops a start on a broken profiles folder
        return {profile.system_prompt.strip(): key for key, profile in profiles.items()}

    def style(self, system_prompt: str) -> str:
        """The profile whose prompt ``build_prompt`` put first in ``system_prompt``; "narrator" for any other."""
        matches = [prompt for prompt in self._styles if system_prompt.startswith(prompt)]
        return self._styles[max(matches, key=len)] if matches else "narrator"

    def stream(self, request: CommentRequest) -> Iterator[str]:
        """Measure, word the findings and yield them word by word, stopping as soon as cancelled."""
        request.timings["model_start"] = time.perf_counter()
        frames = request.frames
        seed = frames[-1].index if frames else 0
        focus = read_focus(instructions_in(request.prompt.user))
        obs = observe([f.image for f in frames], [f.media_time for f in frames], focus)
        sentences = compose(obs, seed, request.trigger, self.style(request.prompt.system), focus)
        text = limit_words(sentences, request.max_tokens)
        for i, word in enumerate(text.split()):
            if request.cancel.is_set():
                return
            if i == 0:
                request.timings["model_first_token"] = time.perf_counter()
            yield word + " "
