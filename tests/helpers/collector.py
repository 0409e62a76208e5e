"""A source's frame and status sinks that let a test wait for the end without sleeping."""

from __future__ import annotations

import threading

from pipeline.frames import Frame
from pipeline.sources.base import Source


class Collector:
    """Frame and status sinks that let a test wait for the end without sleeping."""

    def __init__(self, max_frames: int | None = None, until: str | None = None) -> None:
        self.frames: list[Frame] = []
        self.states: list[tuple[str, str]] = []
        self.done = threading.Event()
        self.max_frames = max_frames
        self.until = until  # a state that ends the wait too (a live source's "reconnecting", say)

    def frame(self, frame: Frame) -> None:
        self.frames.append(frame)
        if self.max_frames and len(self.frames) >= self.max_frames:
            self.done.set()

    def status(self, state: str, detail: str) -> None:
        self.states.append((state, detail))
        if state in ("ended", "failed", self.until):
            self.done.set()

    def run(self, source: Source, timeout: float = 30) -> Collector:
        source.start(self.frame, self.status)
        assert self.done.wait(timeout), f"source did not finish: {self.states}"
        source.stop()
        assert not source.running
        return self
