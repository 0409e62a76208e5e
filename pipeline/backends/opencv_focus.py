"""What live instructions ask the offline narrator to watch: a region of the picture and topics.

Read from the words of an instruction, said back as what the narrator will do, and a position put
in the same region words ("on the left", "near the top right"). Only what it can measure counts:
a topic whose detector this OpenCV build lacks is never promised.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.measure.detections import faces_available, people_available
from pipeline.measure.pictures import Bounds

# A region narrows every measurement to that part of the picture; topics limit the comment to those measurements.
_COLUMNS = {"left": (0.0, 1 / 3), "centre": (1 / 3, 2 / 3), "right": (2 / 3, 1.0)}
_ROWS = {"top": (0.0, 1 / 3), "bottom": (2 / 3, 1.0)}
_REGION_WORDS = {
    "left": r"left",
    "right": r"right",
    "centre": r"cent(?:re|er)|middle",
    "top": r"top|upper",
    "bottom": r"bottom|lower",
}
TOPICS = {  # topic → (the words that ask for it, what the narrator calls it), in the order comments take them
    "people": (r"people|persons?|humans?|pedestrians?|someone|somebody|anyone|anybody", "people"),
    "faces": (r"faces?", "faces"),
    "motion": (r"motion|move\w*|moving", "movement"),
    "light": (r"light\w*|bright\w*|dark\w*", "light"),
    "colour": (r"colou?r\w*", "colour"),
}
_ASKS = "The viewer asks you to: "  # how build_prompt hands live instructions to every backend


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


@dataclass(frozen=True, slots=True)
class Focus:
    """What live instructions asked for that this narrator can measure; empty means everything."""

    column: str | None = None  # a key of _COLUMNS
    row: str | None = None  # a key of _ROWS
    topics: frozenset[str] = field(default_factory=frozenset)  # keys of TOPICS

    @property
    def bounds(self) -> Bounds | None:
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
        topics.update(topic for topic, (pattern, _) in TOPICS.items() if _has(pattern, text))
    if not people_available():
        topics.discard("people")
    if not faces_available():
        topics.discard("faces")
    return Focus(column, row, frozenset(topics))


def _join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def focus_phrase(focus: Focus) -> str | None:
    """What the narrator will do, as a verb phrase ("focus on people on the left"); None: nothing."""
    nouns = [noun for topic, (_, noun) in TOPICS.items() if topic in focus.topics]
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
