"""When a KV cache kept across comments is still good: the rules the in-process backends share.

A backend that prefills each frame once keeps one cache for the model, which all sessions share by
taking turns; these say when a comment must start it over and how frames are told apart.
"""

from __future__ import annotations

from pipeline.frames import Frame

RESTART_TRIGGERS = frozenset({"start", "scene_cut"})

FrameKey = tuple[str, int, float, float, tuple[int, int]]


def starts_over(owner: str, holder: str | None, trigger: str) -> bool:
    """True when the kept cache is no use to this comment: another session (or nobody known) filled it,
    or the comment opens a run or follows a scene cut, where frames from before must not colour it."""
    return owner != holder or trigger in RESTART_TRIGGERS


def frame_key(frame: Frame) -> FrameKey:
    """What identifies a frame across comments (``Frame``'s own ``==`` would compare the pixel arrays)."""
    return (frame.source_id, frame.index, frame.media_time, frame.wall_time, frame.size)
