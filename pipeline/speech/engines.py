"""Speech engines behind one small protocol: text in, audio chunks out, sample rate declared.

An engine yields ``Speech`` chunks for one utterance as soon as it has them (streaming where the
engine can); the speaker resamples, levels and paces them. Engines are shared by all sessions of
an app, so ``stream`` must be safe to call from several threads at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline.prompts import Voice


@dataclass(frozen=True, slots=True)
class Speech:
    """Mono 16-bit audio: one utterance, or one chunk of it."""

    sample_rate: int
    samples: np.ndarray  # int16, shape (n,)

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


class SpeechEngine(Protocol):
    """Text-to-speech. ``stream`` raises OnlookerError with a user-fit message when it fails."""

    name: str

    @property
    def default_voice(self) -> str:
        """The voice used when neither the UI nor the profile picks one this engine knows."""
        ...

    def voices(self) -> list[str]:
        """Voice names a user can pick (may be empty when the engine cannot list them)."""
        ...

    def stream(self, text: str, voice: Voice) -> Iterator[Speech]:
        """Audio for ``text`` in chunks, first chunk as early as the engine allows."""
        ...

    def close(self) -> None:
        """Release connections; the app calls it once at shutdown."""
        ...
