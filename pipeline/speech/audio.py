"""Audio shaping between engines and the player: one output rate, steady chunks, steady loudness.

Gradio streams audio to the browser as HLS segments (one AAC segment per yielded chunk), which
play smoothly only when segments are about a second long; engines give anything from 40 ms
pieces to whole sentences at 22.05 or 24 kHz. Loudness is set once per utterance and moves slowly
between utterances: normalising each chunk on its own would pump the volume mid-sentence.
"""

from __future__ import annotations

import math

import numpy as np
import soxr

from pipeline.speech.engines import Speech

OUTPUT_RATE = 24_000  # MiniCPM-o's own voice and OpenAI's pcm format; espeak's 22050 is resampled
CHUNK_SECONDS = 1.0


class StreamResampler:
    """Resamples one utterance's chunks to the output rate without clicks at chunk boundaries."""

    def __init__(self, out_rate: int = OUTPUT_RATE) -> None:
        self.out_rate = out_rate
        self._in_rate: int | None = None
        self._stream: soxr.ResampleStream | None = None

    def feed(self, speech: Speech) -> np.ndarray:
        """Float32 samples at the output rate for this chunk (the filter keeps a few for the next)."""
        if self._in_rate != speech.sample_rate:
            self._in_rate = speech.sample_rate
            self._stream = (
                None
                if speech.sample_rate == self.out_rate
                else soxr.ResampleStream(speech.sample_rate, self.out_rate, 1, dtype="float32", quality="HQ")
            )
        samples = speech.samples.astype(np.float32) / 32768.0
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples)

    def finish(self) -> np.ndarray:
        """The filter's last samples, at the end of the utterance."""
        if self._stream is None:
            return np.zeros(0, np.float32)
        return self._stream.resample_chunk(np.zeros(0, np.float32), last=True)


class LevelKeeper:
    """One gain per utterance toward a target loudness, smoothed across utterances."""

    def __init__(self, target_dbfs: float = -20.0, smoothing: float = 0.3, max_gain: float = 6.0) -> None:
        self.target = 10 ** (target_dbfs / 20)
        self.smoothing = smoothing
        self.max_gain = max_gain
        self.gain: float | None = None

    @staticmethod
    def voiced_rms(samples: np.ndarray) -> float:
        """RMS of the louder half of 20 ms frames: pauses between words do not count."""
        frame = 480
        usable = len(samples) // frame * frame
        if usable == 0:
            return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0
        energy = np.mean(samples[:usable].reshape(-1, frame) ** 2, axis=1)
        loud = energy[energy >= np.median(energy)]
        return float(np.sqrt(np.mean(loud)))

    def observe(self, samples: np.ndarray) -> float:
        """Update from an utterance (float samples) and return the gain to use for the next one."""
        rms = self.voiced_rms(samples)
        if rms > 1e-4:
            wanted = min(self.target / rms, self.max_gain)
            self.gain = (
                wanted
                if self.gain is None
                else math.exp((1 - self.smoothing) * math.log(self.gain) + self.smoothing * math.log(wanted))
            )
        return self.current

    @property
    def current(self) -> float:
        return 1.0 if self.gain is None else self.gain


def to_int16(samples: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """Float samples (±1.0) to int16 with ``gain``, clipped rather than wrapped."""
    return np.clip(np.round(samples * gain * 32767.0), -32768, 32767).astype(np.int16)


def trim_silence(samples: np.ndarray, level: float = 0.01, keep: float = 0.05, rate: int = OUTPUT_RATE) -> np.ndarray:
    """Cut leading and trailing silence (5 ms frames quieter than ``level``), keeping ``keep`` seconds
    of each so the voice does not start or stop abruptly."""
    frame = rate // 200
    usable = len(samples) // frame * frame
    if usable == 0:
        return samples
    loud = np.flatnonzero(np.abs(samples[:usable].reshape(-1, frame)).max(axis=1) >= level)
    if not len(loud):
        return samples[:0]
    margin = round(keep * rate)
    return samples[max(loud[0] * frame - margin, 0) : min((loud[-1] + 1) * frame + margin, len(samples))]


def silence(seconds: float, rate: int = OUTPUT_RATE) -> np.ndarray:
    return np.zeros(max(round(seconds * rate), 0), dtype=np.int16)


class ChunkBuffer:
    """Collects int16 audio and hands it out in chunks of exactly ``chunk_seconds``; ``flush``
    hands out the rest when the player would otherwise run dry."""

    def __init__(self, rate: int = OUTPUT_RATE, chunk_seconds: float = CHUNK_SECONDS) -> None:
        self.rate = rate
        self.size = round(rate * chunk_seconds)
        self._parts: list[np.ndarray] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, samples: np.ndarray) -> list[np.ndarray]:
        """Buffer ``samples``; return the full chunks now available."""
        if len(samples):
            self._parts.append(samples)
            self._count += len(samples)
        chunks = []
        while self._count >= self.size:
            joined = np.concatenate(self._parts)
            chunks.append(joined[: self.size])
            rest = joined[self.size :]
            self._parts, self._count = ([rest] if len(rest) else []), len(rest)
        return chunks

    def flush(self) -> np.ndarray | None:
        """Everything buffered as one (shorter) chunk, or None when empty."""
        if not self._count:
            return None
        joined = np.concatenate(self._parts)
        self._parts, self._count = [], 0
        return joined
