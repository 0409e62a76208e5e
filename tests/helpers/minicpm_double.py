"""A test double of MiniCPM-V 4.5's model object (NOT the model): no weights, no remote code, scripted replies.

Only for MiniCPM-V 4.5, whose remote code is not available here; MiniCPM-o 4.5 is tested against its real
code (``tests/integration/test_minicpm_real.py``), because a double written from signatures accepted two bugs the real
code refused. Written from the V-4.5 card's ``chat(stream=True)`` signature (``docs/minicpm-api.md``): it
checks what that code asserts (``sampling`` with ``stream``, no system role), records every call, and can
fail, stall (block on an Event) or be closed mid-reply. Each image is recorded by its top-left red value, so
tests that fill frame ``i`` with ``i`` can tell them apart.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


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
