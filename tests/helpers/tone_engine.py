"""A speech engine double with known durations: a tone per word, so pacing tests can do the sums.

Real engines (espeak-ng, an OpenAI-compatible server) are tested on their own; the speaker's timing
logic needs utterances whose length is known in advance, which no real voice gives.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pipeline.prompts import Voice
from pipeline.speech.engines import Speech


def tone(seconds: float, rate: int, amplitude: float = 0.3, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


class ToneEngine:
    """``seconds_per_word`` of 440 Hz per word, at 22050 Hz like espeak-ng, in 0.1 s chunks."""

    name = "tone"
    default_voice = "tone"

    def __init__(self, seconds_per_word: float = 0.2, rate: int = 22050, amplitude: float = 0.3) -> None:
        self.seconds_per_word = seconds_per_word
        self.rate = rate
        self.amplitude = amplitude
        self.spoken: list[str] = []

    def voices(self) -> list[str]:
        return ["tone"]

    def seconds(self, text: str) -> float:
        return len(text.split()) * self.seconds_per_word

    def stream(self, text: str, voice: Voice) -> Iterator[Speech]:
        self.spoken.append(text)
        samples = tone(self.seconds(text), self.rate, self.amplitude)
        step = self.rate // 10
        for i in range(0, len(samples), step):
            yield Speech(self.rate, samples[i : i + step])
