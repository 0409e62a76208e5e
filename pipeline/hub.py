"""The per-session frame hub: newest frame, sampled window, and scene scoring on every frame.

The source thread calls ``push`` for each decoded frame. Scoring runs here at up to
``scene_fps`` (cheap, so cuts are found within a frame or two), while the window is fed at the
slower ``capture_fps`` that the model sees. A cut is captured into the window at once and
wakes the commentator, so it can speak about the new scene without waiting for a capture tick.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque

from pipeline.config import Tuning
from pipeline.events import EventBus, SceneCut
from pipeline.frames import Frame
from pipeline.scene import SceneScore, SceneScorer
from pipeline.window import FrameWindow

LAG_FRAMES = 60  # source lag is the median over this many recent frames
# Beyond these the camera's clock is off, not the stream late: report nothing rather than nonsense.
LAG_PLAUSIBLE = (-0.5, 30.0)


class FrameHub:
    """Thread-safe meeting point between one source (writer) and one commentator (reader)."""

    def __init__(self, bus: EventBus, tuning: Tuning) -> None:
        self._bus = bus
        self._cond = threading.Condition()
        self._tuning = tuning
        self.window = FrameWindow(tuning.window)
        self.scorer = SceneScorer(cut_threshold=tuning.cut_threshold)
        self.latest: Frame | None = None
        self.score = SceneScore(0.0, 0.0, 0.0, False)
        self.last_cut: float | None = None
        self._pending_cut: float | None = None
        self.in_gap = False  # the source is stalled or reconnecting: the newest frame is a frozen one
        self._pending_return: float | None = None  # seconds the feed was gone, until commented on
        self._next_capture = 0.0
        self._next_score = 0.0
        self.ended = False
        self._lags: deque[float] = deque(maxlen=LAG_FRAMES)  # capture → decoded, seconds, where known
        self.scored = 0
        self.scoring_seconds = 0.0

    def set_tuning(self, tuning: Tuning) -> None:
        """Apply a new preset live; the window keeps its newest frames when it shrinks or grows."""
        with self._cond:
            if tuning.window != self.window.size:
                resized = FrameWindow(tuning.window)
                for frame in self.window.snapshot():
                    resized.add(frame)
                self.window = resized
            self.scorer.cut_threshold = tuning.cut_threshold
            self._tuning = tuning

    def push(self, frame: Frame) -> None:
        """Take a decoded frame: score it (throttled), maybe capture it, wake the commentator."""
        with self._cond:
            tuning = self._tuning
            previous, self.latest = self.latest, frame
            if frame.capture_time is not None:
                self._lags.append(frame.wall_time - frame.capture_time)
            t = frame.media_time
            if t < self._next_capture - 1.0 / tuning.capture_fps or t < self._next_score - 1.0:
                self._next_capture = self._next_score = t  # media time jumped back (loop, new source)
                self.scorer.reset()
            cut = False
            if self.in_gap:  # the feed is back: what follows is a new scene, about which the next comment is
                self.in_gap = False
                self._pending_return = frame.wall_time - previous.wall_time if previous else 0.0
                self.last_cut, self._pending_cut = t, None
                self.scorer.reset()
                self._next_capture = self._next_score = t
            if t >= self._next_score:
                started = time.perf_counter()
                self.score = self.scorer.score(frame.image, t)
                self.scoring_seconds += time.perf_counter() - started
                self.scored += 1
                self._next_score = t + 1.0 / tuning.scene_fps - 1e-3
                cut = self.score.cut
            if cut:
                self.last_cut = self._pending_cut = t
            if cut or t >= self._next_capture:
                self.window.add(frame)
                period = 1.0 / tuning.capture_fps
                self._next_capture = max(self._next_capture + period, t + period / 2) if not cut else t + period
            self._cond.notify_all()
        if cut:
            self._bus.publish(SceneCut(t=t, score=round(self.score.change, 3)))

    def take_cut(self) -> float | None:
        """The media time of a cut not yet commented on (and forget it), or None."""
        with self._cond:
            cut, self._pending_cut = self._pending_cut, None
            return cut

    def peek_cut(self) -> float | None:
        with self._cond:
            return self._pending_cut

    def source_lag(self) -> float | None:
        """Seconds from the camera taking a frame to it being decoded here (median of the recent ones);
        None when the stream carries no capture clock, or the camera's clock is plainly not in sync."""
        with self._cond:
            lags = list(self._lags)
        if not lags:
            return None
        lag = statistics.median(lags)
        return lag if LAG_PLAUSIBLE[0] <= lag <= LAG_PLAUSIBLE[1] else None

    def mark_gap(self) -> None:
        """The source stalled or is reconnecting: no comments on the frozen picture until frames return."""
        with self._cond:
            self.in_gap = True

    def take_return(self) -> float | None:
        """How long the feed was gone, once it is back and not yet commented on (and forget it), or None."""
        with self._cond:
            gone, self._pending_return = self._pending_return, None
            return gone

    def mark_ended(self) -> None:
        """The source is done; wake the commentator so it can finish up."""
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    def next_frame(self, after: int | None, timeout: float) -> Frame | None:
        """The latest frame once its index differs from ``after`` (None: any frame); None on timeout or end."""

        def newer() -> bool:
            return (self.latest is not None and self.latest.index != after) or self.ended

        with self._cond:
            self._cond.wait_for(newer, timeout)
            frame = self.latest
        return frame if frame is not None and frame.index != after else None

    def wait(self, timeout: float) -> None:
        """Block until a new frame or the end arrives, or ``timeout`` passes."""
        with self._cond:
            self._cond.wait(timeout)
