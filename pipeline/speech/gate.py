"""The playback clock a session's speaker and commentator share: the audio gate.

The speaker books audio on it as it hands audio to the player, so it always knows when the
player falls silent. The commentator asks it before starting a comment: never while an earlier
comment is still being turned into speech, and only once the booked audio ends within the time
the next comment takes to become audio (``lead``, measured). So the next comment is generated in
the background while the current one plays, is ready just as it ends, and never talks over it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

LEAD_DEFAULT = 1.0  # seconds from trigger to first audio, until measured
LEAD_RANGE = (0.2, 8.0)
COMMIT_AHEAD = 0.5  # hand audio to the player this long before the previous audio ends
EXPECT_TIMEOUT = 60.0  # a comment the speaker never settled stops holding the gate after this


class SpeechGate:
    """Thread-safe: the commentator, the speaker and the UI (mute) all call it."""

    def __init__(self, pause: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.pause = pause
        self.clock = clock
        self.lead = LEAD_DEFAULT
        self._until = 0.0  # when the booked audio ends (clock time); 0 = nothing booked yet
        self._booked = False
        self._expected: dict[int, float] = {}  # comment id → when the commentator announced it
        self._lock = threading.Lock()

    # --- the commentator's side ---
    def expect(self, comment_id: int) -> None:
        """A comment is about to be generated; the gate stays shut until the speaker settles it."""
        with self._lock:
            self._expected[comment_id] = self.clock()

    def is_open(self) -> bool:
        """May a new comment start now? (Nothing pending, and the player is about to fall silent.)"""
        with self._lock:
            now = self.clock()
            if any(now - since < EXPECT_TIMEOUT for since in self._expected.values()):
                return False
            return now >= self._until - COMMIT_AHEAD - self.lead

    # --- the speaker's side ---
    def settle(self, comment_id: int) -> None:
        """All of this comment's audio is booked, or it will not be spoken."""
        with self._lock:
            self._expected.pop(comment_id, None)

    def observe_lead(self, seconds: float) -> None:
        """A measured trigger → first-audio time; the gate opens that much before silence."""
        with self._lock:
            self.lead = min(max(0.7 * self.lead + 0.3 * seconds, LEAD_RANGE[0]), LEAD_RANGE[1])

    def pause_needed(self, pause: float | None = None) -> float:
        """Silence to put before the next audio so it starts ``pause`` (default: the breathing pause)
        after the booked audio ends; less when the player has already been silent a while."""
        with self._lock:
            if not self._booked:
                return 0.0
            wanted = self.pause if pause is None else pause
            return max(wanted - max(self.clock() - self._until, 0.0), 0.0)

    def book(self, seconds: float) -> float:
        """Queue ``seconds`` of audio behind what is booked; returns when it starts playing."""
        with self._lock:
            start = max(self.clock(), self._until)
            self._until = start + seconds
            self._booked = True
            return start

    @property
    def until(self) -> float:
        """When the booked audio ends (clock time)."""
        with self._lock:
            return self._until

    def silence_now(self) -> None:
        """Muted: whatever was booked no longer holds anything back."""
        with self._lock:
            self._until = min(self._until, self.clock())
            self._expected.clear()
