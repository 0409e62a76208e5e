"""The live picture at the source's native rate, optionally delayed for sync.

A plain ``gr.Image`` output cannot keep up with 25-30 FPS, so an encoder thread turns the hub's
frames into JPEGs and a sender thread hands each one, when it is due, to the tab's channel
(``webui.channel``: latest-wins, so a slow browser skips frames). With sync on, frames are held
back by the measured commentary latency (an exponential moving average), so words and picture
line up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import cv2

from pipeline.hub import FrameHub
from pipeline.jpeg import encode_jpeg

log = logging.getLogger(__name__)

MAX_DELAY = 5.0  # seconds of JPEGs kept for sync; more would hide a slow model behind a stale picture
EMA_WEIGHT = 0.3


class LiveView:
    """Encodes the hub's newest frames and hands each due one to ``sink(wall_time, jpeg)``; owns both threads."""

    def __init__(self, hub: FrameHub, sink: Callable[[float, bytes], None], sync: bool = True) -> None:
        self.hub = hub
        self.sync = sync
        self.latency = 0.0  # EMA of commentary latency in seconds
        self._jpegs: deque[tuple[float, bytes]] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._sink = sink
        self._threads = [
            threading.Thread(target=self._encode_loop, name="live-encoder", daemon=True),
            threading.Thread(target=self._send_loop, name="live-sender", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def delay(self) -> float:
        return min(self.latency, MAX_DELAY) if self.sync else 0.0

    def observe_latency(self, seconds: float) -> None:
        """Feed one measured frame-to-first-word latency into the moving average."""
        if seconds > 0:
            self.latency = seconds if self.latency == 0 else (1 - EMA_WEIGHT) * self.latency + EMA_WEIGHT * seconds

    def _encode_loop(self) -> None:
        after: int | None = None
        while not self._stop.is_set():
            frame = self.hub.next_frame(after, timeout=0.25)
            if frame is None:
                continue
            after = frame.index
            try:
                jpeg = encode_jpeg(frame.image)
            except (ValueError, cv2.error) as exc:  # one odd frame must not end the live view
                log.warning("live view: cannot encode frame %d: %s", frame.index, exc)
                continue
            with self._cond:
                self._jpegs.append((frame.wall_time, jpeg))
                while self._jpegs and self._jpegs[0][0] < frame.wall_time - MAX_DELAY - 1:
                    self._jpegs.popleft()
                self._cond.notify_all()

    def _next_due(self, after_wall: float) -> tuple[float, bytes] | None:
        """The newest JPEG newer than ``after_wall`` that is due at the current delay, waiting a little."""
        deadline = time.monotonic() + 0.5
        with self._cond:
            while not self._stop.is_set():
                due_by = time.time() - self.delay
                due = [item for item in self._jpegs if after_wall < item[0] <= due_by]
                if due:
                    return due[-1]
                pending = [item[0] for item in self._jpegs if item[0] > after_wall]
                wait = min(pending) - due_by if pending else 0.25
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(min(max(wait, 0.005), remaining))
        return None

    def _send_loop(self) -> None:
        after = 0.0
        while not self._stop.is_set():
            item = self._next_due(after)
            if item is not None:
                after, jpeg = item
                self._sink(after, jpeg)

    def close(self) -> None:
        """Stop both threads and wait for them."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(5)
