"""What a listener hears from the speaker's chunks: stretches of sound on the playback clock.

Shared by the pacing tests and ``bench/speech.py``, which measure gaps and overlaps the same way.
"""

from __future__ import annotations

import numpy as np

from pipeline.speech.audio import OUTPUT_RATE
from pipeline.speech.speaker import AudioOut


def voiced_spans(chunks: list[AudioOut], threshold: int = 500, merge_gap: float = 0.0) -> list[tuple[float, float]]:
    """(start, end) on the ``plays_at`` clock of each stretch of sound (10 ms frames louder than
    ``threshold``); stretches closer than ``merge_gap`` seconds count as one."""
    origin = chunks[0].plays_at
    end = max(c.plays_at + len(c.samples) / OUTPUT_RATE for c in chunks)
    track = np.zeros(round((end - origin) * OUTPUT_RATE) + 1, np.int16)
    for c in chunks:
        at = round((c.plays_at - origin) * OUTPUT_RATE)
        track[at : at + len(c.samples)] = c.samples
    frame = OUTPUT_RATE // 100
    loud = np.abs(track[: len(track) // frame * frame].astype(np.int32)).reshape(-1, frame).max(axis=1) > threshold
    edges = np.flatnonzero(np.diff(np.concatenate([[0], loud.astype(np.int8), [0]])))
    spans: list[tuple[float, float]] = []
    for on, off in zip(edges[::2], edges[1::2], strict=True):
        start, stop = float(origin + on / 100), float(origin + off / 100)
        if spans and start - spans[-1][1] < merge_gap:
            spans[-1] = (spans[-1][0], stop)
        else:
            spans.append((start, stop))
    return spans
