"""What goes into MiniCPM-o 4.5's decoder and what comes out: markup, the token cap, chunks, cache length.

Pure helpers around the model's own code (found by running it: ``docs/minicpm-api.md``, "Verified on
the real code"), apart from the backend so each rule is tested on its own.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from pipeline.speech.engines import Speech

VOICE_RATE = 24_000
_SPECIAL = re.compile(r"<\|[^|>]*\|>|</?think>")


class Markup:
    """The model's added tokens (``<image>``, ``<unit>``, ``<|im_end|>`` and a hundred more).

    Dropped from what the model says, and from text fed to it: its processor reads them as structure,
    so an ``</image>`` in an earlier comment or in the user's instructions would break the next prefill
    (``torch.hstack`` of mismatched image bounds) and an ``<|im_end|>`` would close a turn.
    """

    def __init__(self, tokenizer: Any) -> None:
        added = tokenizer.get_added_vocab() if callable(getattr(tokenizer, "get_added_vocab", None)) else {}
        tokens = sorted((t for t in added if t.startswith("<") and t.endswith(">")), key=len, reverse=True)
        self.pattern = re.compile("|".join([*map(re.escape, tokens), _SPECIAL.pattern]))

    def remove(self, text: str) -> str:
        return self.pattern.sub("", text)


CHUNK_TOKENS = 10  # o-4.5's streaming_generate decodes in chunks of 10 tokens (the first 11)


def decode_budget(max_tokens: int) -> int:
    """``max_new_tokens`` for o-4.5 so it does not pass ``max_tokens``: it decodes whole chunks of 10,
    so a limit that is not a multiple of 10 is overshot by up to 10 (below 10, ``TokenCap`` trims)."""
    return max(CHUNK_TOKENS, max_tokens - max_tokens % CHUNK_TOKENS)


class TokenCap:
    """Cuts streamed text at ``limit`` tokens of ``tokenizer``, for a decoder that may run past it."""

    def __init__(self, tokenizer: Any, limit: int) -> None:
        self.tokenizer = tokenizer
        self.limit = limit
        self.text = ""

    def take(self, delta: str) -> tuple[str, bool]:
        """(the part of ``delta`` within the limit, whether the limit is reached)."""
        full = self.text + delta
        ids = self.tokenizer.encode(full, add_special_tokens=False)
        if len(ids) < self.limit:
            self.text = full
            return delta, False
        kept = self.tokenizer.decode(ids[: self.limit]) if len(ids) > self.limit else full
        part = kept[len(self.text) :] if kept.startswith(self.text) else ""
        self.text = kept
        return part, True


def kv_length(model: Any) -> int | None:
    """Tokens in o-4.5's streaming KV cache, or None for a model that does not say."""
    length = getattr(model, "_get_kv_cache_length", None)
    return int(length()) if callable(length) else None


def text_tokens(model: Any, text: str) -> int:
    """Tokens ``text`` costs with the model's own tokenizer (a 4-characters-a-token guess before it has one)."""
    processor = getattr(model, "processor", None)
    tokenizer = getattr(processor, "tokenizer", None)
    return len(tokenizer.encode(text, add_special_tokens=False)) if tokenizer is not None else len(text) // 4 + 8


def parse_chunk(chunk: Any) -> tuple[str, np.ndarray | None]:
    """(text delta, 24 kHz float audio or None) from whatever ``streaming_generate`` yields:
    o-4.5 ``(text, is_finished)`` or ``(waveform [1, n], text)``; o-2.6 ``{"text": ...}`` or an
    output with ``.text`` and ``.audio_wav``."""
    if isinstance(chunk, tuple) and len(chunk) == 2:
        first, second = chunk
        if isinstance(first, str):
            return first, None
        return str(second or ""), _as_audio(first)
    if isinstance(chunk, dict):
        return str(chunk.get("text") or ""), _as_audio(chunk.get("audio_wav"))
    return str(getattr(chunk, "text", "") or ""), _as_audio(getattr(chunk, "audio_wav", None))


def _as_audio(wave: Any) -> np.ndarray | None:
    if wave is None:
        return None
    samples = wave.detach().float().cpu().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave)
    samples = samples.reshape(-1).astype(np.float32)
    return samples if len(samples) else None


def to_speech(samples: np.ndarray, rate: int = VOICE_RATE) -> Speech:
    return Speech(rate, np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16))


def said_nothing(exc: BaseException) -> bool:
    """Whether ``exc`` is o-4.5's chunk decoder failing because the first token it picked ends the reply:
    it then concatenates an empty list of hidden states (``utils.ChunkPrefillChunkGenerate``). The model
    chose to say nothing; that is an empty comment, not a broken model."""
    return isinstance(exc, ValueError) and "expected a non-empty list of Tensors" in str(exc)
