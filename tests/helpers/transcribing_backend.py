"""A backend that transcribes (as MiniCPM-o does), standing in for the model in the speech-recognition tests."""

from __future__ import annotations

import numpy as np


class FakeBackend:
    """Stands in for the MiniCPM-o backend: records what audio it was given."""

    def __init__(self, reply: str | Exception = "focus on the goalkeeper") -> None:
        self.reply = reply
        self.calls: list[tuple[int, np.ndarray]] = []

    def transcribe(self, sample_rate: int, samples: np.ndarray) -> str:
        self.calls.append((sample_rate, samples))
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply
