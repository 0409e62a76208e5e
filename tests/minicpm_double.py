"""Test doubles of the MiniCPM model objects (NOT the models): no weights, no remote code, scripted replies.

Written from the signatures in ``docs/minicpm-api.md`` (o-4.5 streaming session API and ``chat`` for ASR;
V-4.5 ``chat(stream=True)``), not from running the real code, which cannot be fetched here. They check the
argument shapes the real code asserts (one message per prefill, list content; ``sampling`` with ``stream``),
record every call, keep a fake KV length, and can fail, stall (block on an Event) or be closed mid-reply.
Each image is recorded by its top-left red value, so tests that fill frame ``i`` with ``i`` can tell them apart.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image


class _Double:
    def __init__(
        self, replies: list[str] | None = None, hold_after: int | None = None, fail_after: int | None = None
    ) -> None:
        self.replies = list(replies or ["A red car passes the stand."])
        self.calls: list[tuple[str, dict[str, Any]]] = []  # (method, its keyword arguments), in call order
        self.hold_after = hold_after  # block (on ``release``) before yielding word number ``hold_after``
        self.fail_after = fail_after  # raise before yielding word number ``fail_after``
        self.release = threading.Event()
        self.holding = threading.Event()  # set while blocked on ``release``
        self.overlap = threading.Event()  # set by any call made while a reply is blocked: concurrent use
        self.generated = 0  # words ("tokens") yielded, over all replies
        self.closed_early = 0  # replies abandoned through close() (GeneratorExit seen)
        self.finished = 0  # replies that ran to their end

    def _record(self, method: str, kwargs: dict[str, Any]) -> None:
        if self.holding.is_set():
            self.overlap.set()
        self.calls.append((method, kwargs))

    def named(self, method: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == method]

    def _words(self, limit: int) -> Iterator[str]:
        """Text deltas word by word for the next reply, honouring hold/fail; counts and notices close()."""
        words = self.replies[len(self.named("reply")) % len(self.replies)].split()[:limit]
        self.calls.append(("reply", {"words": len(words)}))
        try:
            for i, word in enumerate(words):
                if i == self.hold_after:
                    self.holding.set()
                    self.release.wait(timeout=30)  # a stuck kernel; the timeout only guards the test run
                    self.holding.clear()
                if i == self.fail_after:
                    raise RuntimeError("boom in the model's generate")
                self.generated += 1
                yield f"{word}<|tts_eos|>" if i == len(words) - 1 else f"{word} "
            self.finished += 1
        except GeneratorExit:
            self.closed_early += 1
            raise
        finally:
            self.calls.append(("reply_end", {}))


class OmniDouble(_Double):
    """MiniCPM-o 4.5: ``streaming_prefill`` / ``streaming_generate`` / ``reset_session``, TTS init, ``chat`` (ASR)."""

    def __init__(self, *args: Any, tts_error: Exception | None = None, asr_reply: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tts_error = tts_error
        self.asr_reply = asr_reply or "Focus on the goalkeeper.<|tts_eos|><|im_end|>"
        self.kv = 0  # fake KV-cache length: +64 per image, +len(text)//4 per text
        self.prefills: list[dict[str, Any]] = []  # session_id, role, images (red marks), texts, max_slice_nums

    def init_tts(self, streaming: bool = False, model_dir: Path | None = None) -> None:
        self._record("init_tts", {"streaming": streaming, "model_dir": model_dir})
        if self.tts_error is not None:
            raise self.tts_error

    def init_token2wav_cache(self, prompt_speech_16k: Any = None) -> None:
        self._record("init_token2wav_cache", {"prompt_speech_16k": prompt_speech_16k})

    def reset_session(self, reset_token2wav_cache: bool = True) -> None:
        self._record("reset_session", {"reset_token2wav_cache": reset_token2wav_cache})
        self.kv = 0

    def streaming_prefill(self, session_id: str, msgs: list[dict], omni_mode: bool = True, **kwargs: Any) -> str:
        assert len(msgs) == 1, "streaming_prefill takes exactly one message per call"
        content = msgs[0]["content"]
        assert isinstance(content, list), "content must be a list (a str is iterated per character)"
        images = [c.getpixel((0, 0))[0] for c in content if isinstance(c, Image.Image)]
        texts = [c for c in content if isinstance(c, str)]
        record = {"session_id": session_id, "role": msgs[0]["role"], "images": images, "texts": texts, **kwargs}
        self._record("streaming_prefill", record)
        self.prefills.append(record)
        self.kv += 64 * len(images) + sum(len(t) // 4 for t in texts)
        return "".join(texts)

    def streaming_generate(
        self, session_id: str, generate_audio: bool = True, max_new_tokens: int = 256, **kwargs: Any
    ) -> Iterator[tuple[Any, Any]]:
        record = {"session_id": session_id, "generate_audio": generate_audio, "max_new_tokens": max_new_tokens}
        self._record("streaming_generate", {**record, **kwargs})
        return self._stream(max_new_tokens, generate_audio)

    def _stream(self, limit: int, audio: bool) -> Iterator[tuple[Any, Any]]:
        for delta in self._words(limit):
            self.kv += 1
            yield (torch.zeros(1, 2400) + 0.1, delta) if audio else (delta, False)
        if not audio:
            yield "<|im_end|>", True  # the decoder passes special tokens through

    def chat(self, msgs: list[dict] | None = None, **kwargs: Any) -> str:
        self._record("chat", {"msgs": msgs, **kwargs})
        return self.asr_reply


class VisionDouble(_Double):
    """MiniCPM-V 4.5: only ``chat``; with ``stream=True`` a generator of str."""

    def chat(
        self, msgs: list[dict], tokenizer: Any = None, sampling: bool = True, stream: bool = False, **kwargs: Any
    ) -> Iterator[str] | str:
        record = {"msgs": msgs, "tokenizer": tokenizer, "sampling": sampling, "stream": stream}
        self._record("chat", {**record, **kwargs})
        assert sampling or not stream, "if use stream mode, make sure sampling=True"  # V45-MOD chat()
        assert all(m["role"] in ("user", "assistant") for m in msgs), "V-4.5 takes the system prompt apart"
        words = self._words(kwargs.get("max_new_tokens", 2048))
        return words if stream else "".join(words)


class Loader:
    """A ``load=`` for ``MiniCPM``: records ``(path, dtype, attn, vision_only, device)``; returns or raises."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls: list[dict[str, Any]] = []

    def __call__(self, path: Path, dtype: torch.dtype, attn: str, vision_only: bool, device: torch.device) -> Any:
        self.calls.append({"path": path, "dtype": dtype, "attn": attn, "vision_only": vision_only, "device": device})
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


def loader(double: Any) -> Loader:
    return Loader(double)
