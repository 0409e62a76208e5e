"""The Source base: a thread that turns a frame generator into callbacks and status reports.

Subclasses only write ``frames()``. The base owns the thread, stops it, and turns every
exception into a ``failed`` status with a user-fit message, so a broken stream never kills
the session silently and never leaves a thread behind.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

from pipeline.errors import SourceError
from pipeline.frames import Frame

log = logging.getLogger(__name__)

FrameSink = Callable[[Frame], None]
StatusSink = Callable[[str, str], None]


class Source(ABC):
    """A video source. ``start`` spawns the reader thread; ``stop`` ends and joins it."""

    kind: str = "source"
    #: Whether the source has a natural end (files) or should be treated as live.
    live: bool = True

    def __init__(self, uri: str, source_id: str | None = None) -> None:
        self.uri = uri
        self.source_id = source_id or uri
        self.state = "idle"
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_frame: FrameSink = lambda frame: None
        self._on_status: StatusSink = lambda state, detail: None

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

    def report(self, state: str, detail: str = "") -> None:
        """Publish a status change (connecting, live, stalled, reconnecting, ended, failed)."""
        self.state = state
        self._on_status(state, detail)

    def _run(self) -> None:
        self.report("connecting", self.display_name)
        live = False
        try:
            for frame in self.frames(self._stop):
                if not live:
                    live = True
                    self.report("live", f"{frame.size[0]}x{frame.size[1]}")
                self._on_frame(frame)
                if self._stop.is_set():
                    break
        except SourceError as exc:
            self.error = str(exc)
            self.report("failed", self.error)
            return
        except Exception as exc:  # a bug or an unexpected library error: still report, never vanish
            log.exception("source %s crashed", self.kind)
            self.error = f"{type(exc).__name__}: {exc}"
            self.report("failed", self.error)
            return
        if self._stop.is_set():
            self.report("ended", "stopped")
        elif not live:
            self.error = "the source ended before delivering a single video frame"
            self.report("failed", self.error)
        else:
            self.report("ended", "end of stream")
