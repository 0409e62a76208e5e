"""Frames pushed in from outside (the browser webcam): keep only the newest, never queue."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np

from pipeline.frames import Frame
from pipeline.sources.base import Source


class PushSource(Source):
    """A one-slot mailbox: a push replaces any frame the pipeline has not taken yet."""

    kind = "webcam"

    def __init__(self, source_id: str = "webcam") -> None:
        super().__init__("webcam", source_id)
        self._cond = threading.Condition()
        self._pending: np.ndarray | None = None
        self._closed = False
        self._start: float | None = None
        self.pushed = 0
        self.replaced = 0

    def push(self, image: np.ndarray) -> None:
        """Offer a new RGB frame; an untaken older frame is dropped (counted in ``replaced``)."""
        with self._cond:
            if self._pending is not None:
                self.replaced += 1
            self._pending = image
            self.pushed += 1
            self._cond.notify()

    def close(self) -> None:
        """The producer is gone (tab closed, camera off): end the stream cleanly."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        index = 0
        while not stop.is_set():
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed, timeout=0.25)
                image, self._pending = self._pending, None
                closed = self._closed
            if image is not None:
                now = time.monotonic()
                if self._start is None:
                    self._start = now
                self.keep("image", image, now - self._start)
                yield Frame(image, now - self._start, time.time(), index, self.source_id)
                index += 1
            elif closed:
                return

    def stop(self, timeout: float = 5.0) -> None:
        self.close()
        super().stop(timeout)
