"""The narration of a session as one WAV on the media timeline, so it can be muxed onto the video.

Each utterance starts at the media time of its comment; silence fills the gaps. An utterance that
would start before the previous one has finished is pushed back to its end: speech never overlaps.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from pipeline.speech.engines import Speech


class NarrationTrack:
    """Collects utterances at media times; ``write`` renders the whole track."""

    def __init__(self, max_seconds: float | None = None) -> None:
        self.sample_rate: int | None = None
        self.max_seconds = max_seconds  # a long-running monitor must not keep hours of audio in memory
        self.truncated = False
        self._placed: list[tuple[int, np.ndarray]] = []  # (start sample, samples)
        self._end = 0

    def add(self, media_time: float, speech: Speech) -> float:
        """Place an utterance at ``media_time`` (or right after the previous one); returns where it went."""
        if self.sample_rate is None:
            self.sample_rate = speech.sample_rate
        if speech.sample_rate != self.sample_rate:
            raise ValueError(f"utterance at {speech.sample_rate} Hz in a {self.sample_rate} Hz track")
        start = max(round(media_time * self.sample_rate), self._end)
        if self.max_seconds is not None and start + len(speech.samples) > self.max_seconds * self.sample_rate:
            self.truncated = True
            return start / self.sample_rate
        self._placed.append((start, speech.samples))
        self._end = start + len(speech.samples)
        return start / self.sample_rate

    @property
    def seconds(self) -> float:
        return self._end / self.sample_rate if self.sample_rate else 0.0

    def write(self, path: Path, min_seconds: float = 0.0) -> Path:
        """Write 16-bit mono PCM WAV, at least ``min_seconds`` long (the source's length)."""
        rate = self.sample_rate or 24000
        placed = list(self._placed)  # a snapshot: the UI saves while the speech stream keeps adding
        end = max((start + len(samples) for start, samples in placed), default=0)
        track = np.zeros(max(end, round(min_seconds * rate)), dtype=np.int16)
        for start, samples in placed:
            track[start : start + len(samples)] = samples
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(track.tobytes())
        return path

    def save(self, path: Path, played: float) -> str:
        """Write the track, as long as the source played (``played`` seconds), and say where it went."""
        self.write(path, min_seconds=played)
        return f"{path} ({max(self.seconds, played):.1f} s)"
