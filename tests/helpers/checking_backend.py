"""A test double of a model that answers watch-rule checks from a script (no real model can be scripted).

Comments come from ``ScriptedBackend``; a check (a request with a ``question``) takes the next scripted
verdict, or "no" when the script is used up, after ``latency`` seconds of "model time" (the bench's fixed
latency model). Used to test the alert logic (confirmation, cooldowns, clearing, no verdict) where the
answers must be known in advance; the real engine and the offline narrator are tested on their own.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

from pipeline.backends.base import CommentRequest
from pipeline.errors import BackendError
from tests.helpers.scripted_backend import ScriptedBackend

NO = json.dumps({"answer": "no", "confidence": 0.9, "reason": "nothing there"})


def yes(confidence: float = 0.9, reason: str = "it is there") -> str:
    return json.dumps({"answer": "yes", "confidence": confidence, "reason": reason})


class CheckingBackend(ScriptedBackend):
    """``verdicts``: the checks' answers in order (a str is the raw answer, an Exception is raised); or
    ``decide(request)`` answers each check from what it is asked (the rule, the frames' media times)."""

    def __init__(
        self,
        verdicts: list[str | Exception] | None = None,
        decide: Callable[[CommentRequest], str] | None = None,
        latency: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.verdicts = list(verdicts or [])
        self.decide = decide
        self.latency = latency
        self.checks: list[CommentRequest] = []
        self._lock = threading.Lock()

    def stream(self, request: CommentRequest) -> Iterator[str]:
        if not request.question:
            yield from super().stream(request)
            return
        request.timings["model_start"] = time.perf_counter()
        with self._lock:
            self.checks.append(request)
            answer = self.decide(request) if self.decide else self.verdicts.pop(0) if self.verdicts else NO
        if self.latency and request.cancel.wait(self.latency):
            return
        if isinstance(answer, Exception):
            raise BackendError(str(answer), transient=True)
        request.timings["model_first_token"] = time.perf_counter()
        yield answer
