"""Stall detection for live sources: no frame for a while means "stalled", the next frame "live".

A reader blocked in a network read cannot notice its own silence, so a small watchdog thread owned
by the session compares the time of the newest frame with the clock and reports on the source's
behalf. Files are not watched: their pace is set by the decoder, and they end on their own.
"""

from __future__ import annotations

import threading
import time

from pipeline.sources.base import Source

STALL_AFTER = 5.0  # seconds without a frame before a live source counts as stalled


class StallWatchdog:
    """Watches one source; ``frame_arrived`` is called for every frame, ``stop`` ends the thread."""

    def __init__(self, source: Source, stall_after: float = STALL_AFTER, check_every: float = 0.25) -> None:
        self.source = source
        self.stall_after = stall_after
        self.check_every = check_every
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="source-watchdog", daemon=True)

    def start(self) -> None:
        self._last = time.monotonic()
        self._thread.start()

    def frame_arrived(self) -> None:
        """Note a frame; a stalled source is reported live again at once."""
        with self._lock:
            now = time.monotonic()
            silent, self._last = now - self._last, now
            self.source.report_if("stalled", "live", f"back after {silent:.0f} s")

    def _run(self) -> None:
        while not self._stop.wait(self.check_every):
            with self._lock:
                silent = time.monotonic() - self._last
                if self.source.live and silent >= self.stall_after:
                    self.source.report_if("live", "stalled", f"no frame for {silent:.0f} s")

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
