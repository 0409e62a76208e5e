"""The Source base: a thread that turns a frame generator into callbacks and status reports.

Subclasses only write ``frames()``. The base owns the thread, stops it, and turns every
exception into a ``failed`` status with a user-fit message, so a broken stream never kills
the session silently and never leaves a thread behind.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from pipeline.errors import SourceError
from pipeline.events import SourceState
from pipeline.frames import Frame

log = logging.getLogger(__name__)

RECONNECT_BASE = 1.0  # seconds before the first retry (at most; jitter takes up to half off)
RECONNECT_CAP = 15.0  # the longest wait between retries

FrameSink = Callable[[Frame], None]
StatusSink = Callable[[SourceState, str], None]


class VideoTap(Protocol):
    """Where a source hands what it received, as it came, to be kept (``pipeline.recording.video``): called
    on the source's thread, so it only queues."""

    def packet(self, packet: Any, media_time: float) -> None: ...

    def jpeg(self, data: bytes, media_time: float) -> None: ...

    def image(self, rgb: Any, media_time: float) -> None: ...


class Source(ABC):
    """A video source. ``start`` spawns the reader thread; ``stop`` ends and joins it."""

    kind: str = "source"
    #: Whether the source has a natural end (files) or should be treated as live.
    live: bool = True
    #: Whether a live source that broke or ended is reopened (network streams; not a browser webcam).
    reconnects: bool = False
    #: A file that will not stay where it is (a web upload): a recording keeps a copy of it.
    temporary: bool = False

    def __init__(self, uri: str, source_id: str | None = None) -> None:
        self.uri = uri
        self.source_id = source_id or uri
        self.state: SourceState = "idle"
        self.error: str | None = None
        # The reader and the stall watchdog both report: state changes and their callbacks go one at a time.
        self._state_lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_frame: FrameSink = lambda frame: None
        self._on_status: StatusSink = lambda state, detail: None
        self.video_tap: VideoTap | None = None  # set before ``start`` by whoever keeps the video
        self._offset = 0.0  # media time added after a reconnect (the reader thread's)

    @property
    def display_name(self) -> str:
        """The URI as it may be shown or logged (subclasses hide credentials)."""
        return self.uri

    @abstractmethod
    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Yield frames until the source ends or ``stop`` is set; raise SourceError on failure."""

    def start(self, on_frame: FrameSink, on_status: StatusSink) -> None:
        if self._thread is not None:
            raise RuntimeError("source already started")
        self._on_frame, self._on_status = on_frame, on_status
        self._thread = threading.Thread(target=self._run, name=f"source-{self.kind}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the reader to stop and wait for it; safe to call more than once."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("source thread %s did not stop within %.1fs", self.kind, timeout)

    @property
    def thread_id(self) -> int | None:
        """The reader thread's OS id (for per-thread CPU accounting), once started."""
        return self._thread.native_id if self._thread is not None else None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the reader to finish; True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def report(self, state: SourceState, detail: str = "") -> None:
        """Publish a status change (connecting, live, stalled, reconnecting, ended, failed)."""
        with self._state_lock:
            self.state = state
            self._on_status(state, detail)

    def report_if(self, expected: SourceState, state: SourceState, detail: str = "") -> bool:
        """Report ``state`` only if the source is still in ``expected``, checked and changed at once, so
        the watchdog's "stalled" cannot land after the reader's "reconnecting" or "failed"."""
        with self._state_lock:
            if self.state != expected:
                return False
            self.report(state, detail)
            return True

    def keep(self, kind: str, item: Any, media_time: float) -> None:
        """Hand what arrived (a demuxed ``packet``, a ``jpeg``, an ``image``) at ``media_time`` on this
        connection's clock to the video tap, on the session's timeline; nothing without a tap."""
        tap = self.video_tap
        if tap is not None:
            getattr(tap, kind)(item, media_time + self._offset)

    def _run(self) -> None:
        """Read until the end; a live source that was live and then broke reconnects, forever, with
        exponential backoff and jitter (``reconnect_delay``), and its media time carries on."""
        self.report("connecting", self.display_name)
        ever_live = False
        attempt = 0
        self._offset = 0.0  # media time added after a reconnect, so the timeline never runs backwards
        last_time, last_wall = 0.0, time.monotonic()
        while True:
            live_now = False
            first_time: float | None = None
            try:
                for frame in self.frames(self._stop):
                    if first_time is None:
                        first_time = frame.media_time
                        if ever_live:  # continue the timeline after the gap the outage left
                            self._offset = last_time + (time.monotonic() - last_wall) - frame.media_time
                    if self._offset:
                        frame = dataclasses.replace(frame, media_time=frame.media_time + self._offset)
                    if not live_now:
                        size = f"{frame.size[0]}x{frame.size[1]}"
                        back = f"back after {time.monotonic() - last_wall:.0f} s, " if ever_live else ""
                        live_now, ever_live, attempt = True, True, 0
                        self.report("live", back + size)
                    last_time, last_wall = frame.media_time, time.monotonic()
                    self._on_frame(frame)
                    if self._stop.is_set():
                        break
                problem = "the stream ended" if self.live and self.reconnects else ""
            except SourceError as exc:
                problem = str(exc)
            except Exception as exc:  # a bug or an unexpected library error: still report, never vanish
                log.exception("source %s crashed", self.kind)
                problem = f"{type(exc).__name__}: {exc}"
            if self._stop.is_set():
                self.report("ended", "stopped")
                return
            if not (self.live and self.reconnects and ever_live and problem):  # a source never live fails
                break
            attempt += 1
            wait = reconnect_delay(attempt)
            self.report("reconnecting", f"{problem}; retry {attempt} in {wait:.1f} s")
            if self._stop.wait(wait):
                self.report("ended", "stopped")
                return
        if problem:
            self.error = problem
            self.report("failed", self.error)
        elif not ever_live:
            self.error = "the source ended before delivering a single video frame"
            self.report("failed", self.error)
        else:
            self.report("ended", "end of stream")


def reconnect_delay(attempt: int, base: float = RECONNECT_BASE, cap: float = RECONNECT_CAP) -> float:
    """Exponential backoff with full jitter in its upper half: 0.5-1 s, 1-2 s, 2-4 s … up to ``cap``."""
    ceiling = min(base * 2 ** (attempt - 1), cap)
    return ceiling * (0.5 + random.random() / 2)  # jitter, not security
