"""A rule check's question and its answer: a few tokens of JSON, not a comment.

Every backend gets the same question; an engine with structured output is held to ``VERDICT_SCHEMA``
(``CommentRequest.answer_schema``), the rest are read strictly. An answer that is not exactly one JSON
object with ``answer`` yes/no, a ``confidence`` between 0 and 1 and a ``reason`` is no verdict: counted,
never an alert, never a crash.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pipeline.prompts import PromptParts

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "enum": ["yes", "no"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string", "maxLength": 160},
    },
    "required": ["answer", "confidence", "reason"],
    "additionalProperties": False,
}
CHECK_TOKENS = 64  # enough for the JSON and a one-sentence reason
MAX_REASON = 160
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)

_SYSTEM = (
    "You watch a camera and answer one yes/no question about its newest frames. "
    'Reply with JSON only, exactly: {"answer": "yes" or "no", "confidence": a number from 0 to 1, '
    '"reason": one short sentence about what you see}. No other text.'
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The model's answer to one rule on one set of frames."""

    yes: bool
    confidence: float
    reason: str


def check_prompt(rule_text: str, frame_count: int) -> PromptParts:
    """The question for one rule: the frames travel beside it, newest last."""
    frames = "this frame" if frame_count <= 1 else f"these {frame_count} frames (oldest first, newest last)"
    return PromptParts(system=_SYSTEM, user=f"Looking at {frames}, is this true now: {rule_text}?")


def parse_verdict(text: str) -> Verdict | None:
    """The verdict in an answer, or None when it is not one JSON object of the schema's shape."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    answer, confidence, reason = data.get("answer"), data.get("confidence"), data.get("reason")
    if not isinstance(answer, str) or answer.strip().lower() not in ("yes", "no"):
        return None
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence <= 1:
        return None
    if not isinstance(reason, str):
        return None
    return Verdict(answer.strip().lower() == "yes", float(confidence), " ".join(reason.split())[:MAX_REASON])


def verdict_json(yes: bool, confidence: float, reason: str) -> str:
    """A verdict as a backend that decides without a model (the offline narrator) answers it."""
    return json.dumps({"answer": "yes" if yes else "no", "confidence": round(confidence, 2), "reason": reason})
