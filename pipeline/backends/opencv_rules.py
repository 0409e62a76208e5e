"""The watch rules the offline narrator can judge: a fixed vocabulary on its own measurements.

A rule names one or more of: motion, a person, a face, a scene cut, dark, light; optionally in a part
of the picture (left, right, top, bottom, centre). All that it names must hold ("a person moving on
the left": a person, and motion, on the left). Words it cannot measure make the rule refused at Start
with this list (``VOCABULARY``): a monitor that silently ignores a rule would be worse than none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.backends.opencv_focus import read_focus
from pipeline.measure.detections import faces_available, people_available
from pipeline.measure.observations import Observations, observe

# kind → the words that name it; checked in this order ("lights off" is dark before it is light)
_KINDS = {
    "cut": r"cuts?|scene (?:cut|change)s?|new scene|(?:camera|shot) (?:change|switch)e?s?",
    "person": r"people|persons?|humans?|pedestrians?|someone|somebody|anyone|anybody|man|woman|visitors?|intruders?",
    "face": r"faces?",
    "dark": r"dark\w*|black|lights? (?:go(?:es)? |are |is |turn(?:s|ed)? |switch(?:es|ed)? )?(?:off|out)",
    "light": r"bright\w*|lit|lights? (?:go(?:es)? |are |is |turn(?:s|ed)? |switch(?:es|ed)? )?on|daylight",
    "motion": r"motion|mov\w*|activity|active",
}
VOCABULARY = (
    "motion (moves, movement, activity), a person (someone, people), a face, a scene cut, dark (lights off), "
    "light (bright, lights on); optionally in a part of the picture: left, right, top, bottom, centre"
)
MOTION_YES = 0.01  # share of the watched part changing between frames that counts as motion
DARK_BELOW = 50.0  # mean grey level (0..255)
LIGHT_ABOVE = 110.0


@dataclass(frozen=True, slots=True)
class Condition:
    """What a rule asks, in measurements: every kind must hold inside ``bounds`` (None: the whole picture)."""

    kinds: tuple[str, ...]
    bounds: tuple[float, float, float, float] | None
    where: str  # the part of the picture in words, "" for all of it


_NAMES = {"cut": "a scene cut", "person": "a person", "face": "a face", "dark": "dark", "light": "light"}


def meaning(condition: Condition) -> str:
    """What the narrator will judge, in words ("a person and motion on the left"), for the user to see."""
    names = [_NAMES.get(kind, "motion") for kind in condition.kinds]
    return " and ".join(names) + (f" {condition.where}" if condition.where else "")


def _has(pattern: str, text: str) -> bool:
    return re.search(rf"\b(?:{pattern})\b", text, re.IGNORECASE) is not None


def read_condition(text: str) -> Condition | None:
    """The condition in a rule's words, or None when it names nothing this narrator can measure."""
    kinds = [kind for kind, pattern in _KINDS.items() if _has(pattern, text)]
    if not kinds:
        return None
    focus = read_focus([text])
    return Condition(tuple(kinds), focus.bounds, focus.where or "")


def condition_problem(text: str) -> str | None:
    """Why the offline narrator cannot judge this rule (None: it can), listing what it can."""
    condition = read_condition(text)
    if condition is None:
        return (
            f"the offline narrator cannot judge '{text}': it understands {VOCABULARY}. "
            "Reword the rule, or use a vision-language model (--model or --base-url)"
        )
    available = {"person": people_available(), "face": faces_available()}
    lacking = [kind for kind in condition.kinds if not available.get(kind, True)]
    if lacking:
        return f"'{text}' needs a {lacking[0]} detector, which this OpenCV build lacks"
    return None


def judge(
    condition: Condition, images: Sequence[np.ndarray], times: Sequence[float], cut: bool
) -> tuple[bool, float, str]:
    """(holds, confidence, reason) for a condition on frames oldest→newest; ``cut``: the check follows a cut."""
    obs = observe(images, times, condition.bounds, detect=condition.kinds)
    results = [_one(kind, obs, cut) for kind in condition.kinds]
    holds = all(ok for ok, _, _ in results)
    confidence = min(c for _, c, _ in results) if holds else max(c for ok, c, _ in results if not ok)
    reason = "; ".join(r for _, _, r in results)
    where = f" {condition.where}" if condition.where else ""
    return holds, confidence, f"{reason}{where}"


def _one(kind: str, obs: Observations, cut: bool) -> tuple[bool, float, str]:
    if kind == "motion":
        share = obs.motion.amount
        moving = obs.motion.pairs > 0 and share >= MOTION_YES
        sure = min(0.5 + share * 10, 0.99) if moving else min(0.5 + (MOTION_YES - share) * 50, 0.99)
        return moving, sure, f"{share:.0%} of the picture changing" if moving else "no motion"
    if kind in ("person", "face"):
        boxes = obs.people if kind == "person" else obs.faces
        count = len(boxes or ())
        noun = ("person" if count == 1 else "people") if kind == "person" else ("face" if count == 1 else "faces")
        return count > 0, 0.8 if count else 0.7, f"{count} {noun} seen" if count else f"no {noun} seen"
    if kind == "cut":
        happened = cut or obs.cuts > 0
        return happened, 0.9, "a scene cut" if happened else "no scene cut"
    level = obs.light.after
    if kind == "dark":
        dark = level < DARK_BELOW
        return dark, 0.9, f"dark (brightness {level:.0f}/255)" if dark else f"not dark (brightness {level:.0f}/255)"
    bright = level > LIGHT_ABOVE
    return bright, 0.9, f"light (brightness {level:.0f}/255)" if bright else f"not light (brightness {level:.0f}/255)"
