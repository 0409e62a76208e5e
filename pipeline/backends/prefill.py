"""When a KV cache kept across comments is still good: the rules the in-process backends share.

A backend that prefills each frame once keeps one cache for the model, which all sessions share by
taking turns; these say when a comment must start it over and how frames are told apart.
"""

from __future__ import annotations

from pipeline.frames import Frame

RESTART_TRIGGERS = frozenset({"start", "scene_cut"})
TOKENS_PER_FRAME = 66  # MiniCPM-o: one 448 px slice, 64 resampler queries between <image> and </image>; then measured
CONTEXT_BUDGET = 6000  # below MiniCPM-o 4.5's own 8000-token sliding window, so our reset comes first

FrameKey = tuple[str, int, float, float, tuple[int, int]]


def starts_over(owner: str, holder: str | None, trigger: str) -> bool:
    """True when the kept cache is no use to this comment: another session (or nobody known) filled it,
    or the comment opens a run or follows a scene cut, where frames from before must not colour it."""
    return owner != holder or trigger in RESTART_TRIGGERS


def frame_key(frame: Frame) -> FrameKey:
    """What identifies a frame across comments (``Frame``'s own ``==`` would compare the pixel arrays)."""
    return (frame.source_id, frame.index, frame.media_time, frame.wall_time, frame.size)


class PrefillLedger:
    """What the model's streaming session holds, so each frame is prefilled exactly once.

    ``plan`` says whether the session must start over (another Onlooker session used the model, a
    scene cut, or the context would pass the budget) and which frames are new to it. Token counts are
    the model's real KV-cache length where it tells (``synced``); the cost of a frame is learned from
    the first frames prefilled, so the budget check uses what this checkpoint really spends.
    """

    def __init__(self, budget: int = CONTEXT_BUDGET, frame_tokens: int = TOKENS_PER_FRAME) -> None:
        self.budget = budget
        self.frame_tokens = frame_tokens
        self.owner: str | None = None
        self.last_time: float | None = None
        self.tokens = 0  # in the session now
        self.expected = 0  # what the last plan said the session would hold after its prefill
        self.prefilled = 0  # frames prefilled since the session began
        self.resets = 0

    def plan(self, owner: str, frames: list[Frame], trigger: str, text_tokens: int) -> tuple[bool, list[Frame]]:
        """(reset first?, frames to prefill) for a comment on ``frames`` with ``text_tokens`` of prompt
        and reply; ``expected`` becomes the session's length after the prefill (reply excluded)."""
        reset = starts_over(owner, self.owner, trigger)
        new = frames if reset else [f for f in frames if self.last_time is None or f.media_time > self.last_time]
        if not reset and self.tokens + len(new) * self.frame_tokens + text_tokens > self.budget:
            reset, new = True, frames
        return reset, new

    def started(self, owner: str, system_tokens: int) -> None:
        self.owner, self.last_time, self.tokens, self.prefilled = owner, None, system_tokens, 0
        self.resets += 1

    def added(self, frames: list[Frame], tokens: int) -> None:
        """``frames`` went in, costing ``tokens`` in all (measured, or estimated as ``frame_tokens`` each)."""
        if frames:
            self.last_time = frames[-1].media_time
            self.frame_tokens = max(1, round(tokens / len(frames)))
        self.prefilled += len(frames)
        self.tokens += tokens

    def synced(self, tokens: int | None) -> None:
        """The model says how long its cache is (replies and its own sliding window included)."""
        if tokens is not None:
            self.tokens = tokens

    def forget(self) -> None:
        """The session state is unknown (a failed or cancelled turn): start over next time."""
        self.owner = None
