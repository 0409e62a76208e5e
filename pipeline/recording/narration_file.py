"""A camera's narration streamed to disk as it is spoken: one Ogg Opus file on the media timeline.

Why Ogg Opus: it has no size limit (a WAV stops at 4 GiB, about a day at 24 kHz), silence costs almost
nothing (~1 MB an hour; speech ~11 MB an hour at 24 kbit/s), nothing is held in memory, and with short
pages flushed as they are written a file cut off by a crash plays up to its last fraction of a second.
Media time 0 is the start of the file; silence fills the time between utterances, written as time goes
by (``fill_to``) so the file stays current and long silences never come as one burst of work.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

RATE = 24_000  # the speaker's output rate
BIT_RATE = 24_000
PAGE_US = 200_000  # an Ogg page every 0.2 s: what a crash can lose
SILENCE_STEP = RATE  # silence is encoded a second at a time


class NarrationFile:
    """Append-only: ``add`` places speech at a media time (after what is already there), ``fill_to``
    writes silence up to a media time, ``close`` finishes the file. One thread writes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        options = {"flush_packets": "1", "page_duration": str(PAGE_US)}
        self._container = av.open(str(path), "w", format="ogg", options=options)
        self._stream = self._container.add_stream("libopus", rate=RATE, layout="mono")
        self._stream.bit_rate = BIT_RATE
        self._written = 0  # samples on the timeline so far
        self.spoken = 0  # samples of speech among them

    @property
    def seconds(self) -> float:
        return self._written / RATE

    def fill_to(self, media_time: float) -> None:
        """Silence up to ``media_time`` (nothing if the file is already past it)."""
        target = round(media_time * RATE)
        while self._written < target:
            self._encode(np.zeros(min(target - self._written, SILENCE_STEP), np.int16))

    def add(self, media_time: float, samples: np.ndarray) -> None:
        """Speech (int16 mono at ``RATE``) at ``media_time``, or right after what is written if that is later."""
        self.fill_to(media_time)
        self._encode(np.asarray(samples, np.int16))
        self.spoken += len(samples)

    def _encode(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._written
        self._written += len(samples)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
