"""A test double of a model backend (no real model can be scripted): replies from a list.

Used to test the commentator's own logic (pacing, suppression, context, cancellation,
error handling) where the content of the reply must be known in advance.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from pipeline.backends.base import Backend, Capabilities, CommentRequest
from pipeline.config import Settings
from pipeline.errors import BackendError
from pipeline.speech.engines import Speech
from tests.helpers.tone_engine import tone


class ScriptedBackend(Backend):
    """Yields the next scripted reply word by word; an Exception in the script is raised."""

    name = "scripted"

    def __init__(
        self, replies: list[str | Exception] | None = None, max_frames: int = 8, voice_rate: int | None = None
    ) -> None:
        self.replies = list(replies or [])
        self.requests: list[CommentRequest] = []
        self.voice_rate = voice_rate  # set: it "speaks" 0.1 s of tone per word, like a model with its own voice
        self.capabilities = Capabilities(max_frames=max_frames, audio_out=voice_rate is not None)
        self.gate: threading.Event | None = None  # when set by a test, each stream waits on it
        self.streaming = threading.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> ScriptedBackend:
        return cls()

    @property
    def description(self) -> str:
        return "scripted test backend"

    def stream(self, request: CommentRequest) -> Iterator[str]:
        self.requests.append(request)
        request.timings["model_start"] = time.perf_counter()
        reply = self.replies.pop(0) if self.replies else f"Comment number {len(self.requests)}."
        if isinstance(reply, Exception):
            raise BackendError(str(reply))
        self.streaming.set()
        for i, word in enumerate(reply.split(" ")):
            if self.gate is not None:
                while not self.gate.wait(0.05):
                    if request.cancel.is_set():
                        return
            if request.cancel.is_set():
                return
            if i == 0:
                request.timings["model_first_token"] = time.perf_counter()
            yield word + " "
            if self.voice_rate is not None and request.on_audio is not None:
                request.on_audio(Speech(self.voice_rate, tone(0.1, self.voice_rate)))
