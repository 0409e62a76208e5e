"""A test double of Step-Audio 2's ``Token2wav`` vocoder (NOT the vocoder): audio tokens in, a tone out.

MiniCPM-o 4.5 speaks through ``from stepaudio2 import Token2wav`` (``minicpmo-utils``), whose flow and
HiFT weights (``assets/token2wav``, ~1.2 GB) cannot be fetched here. Everything before it runs for real:
the language model, the real ``MiniCPMTTS`` producing audio tokens, the model's chunking of them. This
double takes the tokens and returns 40 ms of 24 kHz tone per token (Token2wav's 25 tokens a second), so
tests can check when audio arrives, how much, and that the model's own code drove it.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

RATE = 24_000
SAMPLES_PER_TOKEN = RATE // 25


class Token2wavDouble:
    """The calls ``streaming_generate`` and ``init_token2wav_cache`` make, recorded."""

    instances: ClassVar[list[Token2wavDouble]] = []

    def __init__(self, model_dir: str | Path, float16: bool = False, n_timesteps: int = 10) -> None:
        self.model_dir = Path(model_dir)
        self.cache: Any = None
        self.stream_cache: Any = None
        self.hift_cache_dict: Any = None
        self.prompts: list[str] = []  # reference clips given to set_stream_cache
        self.tokens: list[list[int]] = []  # audio tokens of each stream() call
        Token2wavDouble.instances.append(self)

    def set_stream_cache(self, prompt_wav_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
        self.prompts.append(prompt_wav_path)
        return {"flow": torch.zeros(1)}, {"hift": torch.zeros(1)}

    def stream(
        self, tokens: list[int], prompt_wav: Any = None, last_chunk: bool = False, return_waveform: bool = True
    ) -> np.ndarray:
        self.tokens.append(list(tokens))
        spoken = len(tokens) if last_chunk else min(len(tokens), 25)  # the 3 look-ahead tokens come back next time
        t = np.arange(spoken * SAMPLES_PER_TOKEN) / RATE
        return (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def install() -> types.ModuleType:
    """A ``stepaudio2`` module whose ``Token2wav`` is the double (the caller removes it from sys.modules)."""
    module = types.ModuleType(
        "stepaudio2", "Test double of stepaudio2 (tests/helpers/token2wav_double.py); not the vocoder."
    )
    module.__spec__ = importlib.machinery.ModuleSpec("stepaudio2", None)
    module.Token2wav = Token2wavDouble  # type: ignore[attr-defined]
    sys.modules["stepaudio2"] = module
    return module


@contextlib.contextmanager
def installed() -> Iterator[type[Token2wavDouble]]:
    """While inside, the model's own ``init_tts`` (``from stepaudio2 import Token2wav``) gets the double,
    whether ``minicpmo-utils`` is installed or not; the real module (if any) comes back after."""
    saved = sys.modules.get("stepaudio2")
    install()
    try:
        yield Token2wavDouble
    finally:
        if saved is None:
            sys.modules.pop("stepaudio2", None)
        else:
            sys.modules["stepaudio2"] = saved
