"""One policy in front of every shared backend: which camera generates next.

Cameras (of one session, or of every tab of the web app) share one model or one engine. Each camera
asks for a turn when a comment is due and takes its frames only once the turn is granted, so frames
never go stale in a queue; a camera has at most one pending request, and asking again replaces it (a
scene cut while a heartbeat waits makes it a cut). The next turn goes, in this order, to:

1. a request that has waited ``max_wait`` seconds (no camera waits without bound),
2. the most urgent reason (``PRIORITY``: alert checks, then a new scene or the feed coming back,
   then activity, then the heartbeat),
3. for a backend that keeps per-stream state (MiniCPM's streaming session, incremental prefill),
   the camera whose state is warm: after its turn the slot is held for it for as long as a switch
   costs (measured: time to first token after a switch minus without), at most ``sticky_turns`` in
   a row, so interleaved cameras do not start over on every turn,
4. the one that asked first.

``slots`` turns run at once: 1 for a local model, ``--max-in-flight`` for an engine.
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.backends.base import Backend

PRIORITY: dict[str, int] = {"alert": 0, "start": 1, "scene_cut": 1, "feed_back": 1, "active": 2, "heartbeat": 3}
LOWEST = max(PRIORITY.values())
URGENT = 1  # this priority or better is never kept waiting for a warm camera
MAX_WAIT = 10.0  # seconds a request may wait before it goes ahead of any priority
STICKY_TURNS = 3  # turns in a row a warm camera may take while others wait
HOLD_DEFAULT = 0.3  # seconds the slot is held for a warm camera before a switch has been measured
HOLD_MAX = 2.0
_SMOOTH = 0.3


@dataclass(eq=False)
class Ticket:
    """One camera's request for a turn. ``queue_wait`` is how long it waited (seconds)."""

    stream: str
    trigger: str
    asked: float
    order: int
    granted: float | None = None
    switched: bool = False  # the backend served another stream before this turn
    done: bool = False
    _scheduler: Scheduler | None = field(default=None, repr=False)

    @property
    def priority(self) -> int:
        return PRIORITY.get(self.trigger, LOWEST)

    @property
    def queue_wait(self) -> float:
        return (self.granted - self.asked) if self.granted is not None else 0.0

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the turn; True once it is granted."""
        assert self._scheduler is not None
        return self._scheduler._wait(self, timeout)


@dataclass
class SwitchCost:
    """Time to first token on turns that followed another stream's, and on turns that did not."""

    switched: float | None = None
    same: float | None = None

    def observe(self, seconds: float, switched: bool) -> None:
        old = self.switched if switched else self.same
        new = seconds if old is None else (1 - _SMOOTH) * old + _SMOOTH * seconds
        if switched:
            self.switched = new
        else:
            self.same = new

    @property
    def seconds(self) -> float | None:
        """What a switch costs, once both kinds of turn were seen."""
        if self.switched is None or self.same is None:
            return None
        return max(self.switched - self.same, 0.0)


class Scheduler:
    """Thread-safe: every camera's commentator asks, waits and finishes turns here."""

    def __init__(
        self,
        slots: int = 1,
        keeps_stream_state: bool = False,
        max_wait: float = MAX_WAIT,
        sticky_turns: int = STICKY_TURNS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.slots = max(slots, 1)
        self.keeps_stream_state = keeps_stream_state
        self.max_wait = max_wait
        self.sticky_turns = sticky_turns
        self.clock = clock
        self.cost = SwitchCost()
        self.turns = 0
        self.switches = 0
        self._pending: dict[str, Ticket] = {}
        self._running: set[Ticket] = set()
        self._last_stream: str | None = None
        self._streak = 0
        self._hold_until = 0.0  # the slot is kept for ``_last_stream`` until then
        self._order = itertools.count()
        self._cond = threading.Condition()

    def ask(self, stream: str, trigger: str) -> Ticket:
        """Request a turn for ``stream``; a pending request of the same stream is replaced (it keeps its
        place in the queue and takes the newer reason when that is more urgent)."""
        with self._cond:
            ticket = self._pending.get(stream)
            if ticket is not None:
                if PRIORITY.get(trigger, LOWEST) < ticket.priority:
                    ticket.trigger = trigger
            else:
                ticket = Ticket(stream, trigger, self.clock(), next(self._order), _scheduler=self)
                self._pending[stream] = ticket
            self._dispatch()
            return ticket

    def withdraw(self, ticket: Ticket) -> None:
        """The camera no longer wants its turn (it stopped); a granted turn is finished instead."""
        with self._cond:
            if self._pending.get(ticket.stream) is ticket:
                del self._pending[ticket.stream]
        if ticket.granted is not None:
            self.finish(ticket)
        else:
            with self._cond:
                self._dispatch()

    def finish(self, ticket: Ticket, first_token: float | None = None) -> None:
        """The turn is over; ``first_token`` (seconds to the model's first token) measures switches."""
        with self._cond:
            if ticket.done:
                return
            ticket.done = True
            self._running.discard(ticket)
            if first_token is not None and first_token > 0:
                self.cost.observe(first_token, ticket.switched)
            if self.keeps_stream_state and self._streak < self.sticky_turns:
                self._hold_until = self.clock() + self.hold_seconds()
            self._dispatch()

    def hold_seconds(self) -> float:
        """How long the slot waits for the warm camera: what a switch costs, no more."""
        measured = self.cost.seconds
        return min(HOLD_DEFAULT if measured is None else measured, HOLD_MAX)

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._pending)

    def _wait(self, ticket: Ticket, timeout: float) -> bool:
        with self._cond:
            deadline = time.monotonic() + timeout  # the caller's patience is real time, whatever ``clock`` is
            while ticket.granted is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.05))  # a hold runs out, or a wait passes max_wait
                self._dispatch()
            return ticket.granted is not None

    def _dispatch(self) -> None:
        """Grant free slots (holding the lock)."""
        while len(self._running) < self.slots and self._pending:
            ticket = self._pick(self.clock())
            if ticket is None:
                return
            del self._pending[ticket.stream]
            self._grant(ticket)

    def _pick(self, now: float) -> Ticket | None:
        def overdue(t: Ticket) -> bool:
            return now - t.asked >= self.max_wait

        pending = list(self._pending.values())
        warm = self._pending.get(self._last_stream) if self._last_stream is not None else None
        held = self.keeps_stream_state and now < self._hold_until and not self._running
        if held and warm is None and not any(overdue(t) or t.priority <= URGENT for t in pending):
            return None  # the slot stays free a moment for the camera whose state is warm
        sticky = warm is not None and self.keeps_stream_state and self._streak < self.sticky_turns

        def key(t: Ticket) -> tuple[bool, int, bool, int]:
            return (not overdue(t), t.priority, not (sticky and t is warm), t.order)

        return min(pending, key=key)

    def _grant(self, ticket: Ticket) -> None:
        ticket.granted = self.clock()
        ticket.switched = self._last_stream is not None and ticket.stream != self._last_stream
        self.turns += 1
        if ticket.switched:
            self.switches += 1
            self._streak = 1
        else:
            self._streak += 1
        self._last_stream = ticket.stream
        self._hold_until = 0.0
        self._running.add(ticket)
        self._cond.notify_all()


_SHARED: weakref.WeakKeyDictionary[Backend, Scheduler] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def scheduler_for(backend: Backend) -> Scheduler:
    """The one scheduler of a backend, whoever shares it (cameras of a session, tabs of the app)."""
    with _SHARED_LOCK:
        scheduler = _SHARED.get(backend)
        if scheduler is None:
            scheduler = Scheduler(backend.parallel, backend.keeps_stream_state)
            _SHARED[backend] = scheduler
        return scheduler
