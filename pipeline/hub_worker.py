"""A thread that works on one camera's frames, owned by whoever starts it: the commentator and the watcher.

Both wait on the camera's hub, both must end at once when told (what they are asking the backend is
cancelled), and neither may die silently: a crash is one error event on the bus with its reason, kept in
``failed``. What each does with the frames (``_loop``) and at its end (``_finish``) is its own.
"""

from __future__ import annotations

import logging
import threading
from typing import ClassVar

from pipeline.events import Bus, ErrorEvent
from pipeline.hub import FrameHub

log = logging.getLogger(__name__)


class HubWorker:
    """Owns one thread over ``hub``; ``stop`` cancels what is in flight and joins it. Safe to stop twice,
    from any thread (its own included)."""

    thread_name: ClassVar[str]
    crash_words: ClassVar[str]  # what a crash means to the user, before its reason
    crash_fatal: ClassVar[bool]  # whether the session cannot go on without this thread

    def __init__(self, hub: FrameHub, bus: Bus) -> None:
        self.hub = hub
        self.bus = bus
        self.failed: str | None = None
        self._stop = threading.Event()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel what is in flight and join the thread."""
        self._stop.set()
        self._cancel.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:
            log.exception("%s crashed", self.thread_name)
            self.failed = f"{self.crash_words}: {type(exc).__name__}: {exc}"
            self.bus.publish(ErrorEvent(t=self._now(), message=self.failed, fatal=self.crash_fatal))
        finally:
            self._finish()

    def _loop(self) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """After the loop, however it ended (on this thread)."""

    def _now(self) -> float:
        latest = self.hub.latest
        return latest.media_time if latest else 0.0
