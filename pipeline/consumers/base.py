"""The one shape of everything that listens to a session: a consumer on the bus.

A consumer names itself, says which events it wants (``wants``, and optionally one camera), and
handles them one at a time on a thread it owns. The base does the rest that every consumer used to
write for itself: the subscription, the thread, draining what is queued when the bus closes, and
stopping. A consumer that raises is reported on the bus as an ``error`` event and stopped; the session
and the other consumers go on. ``backlog`` says how far behind it is.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from pipeline.events import Bus, CameraTag, ErrorEvent, Event, Subscription

if TYPE_CHECKING:
    from pipeline.sources.base import Source, VideoTap
    from pipeline.speech.speaker import AudioOut

log = logging.getLogger(__name__)


class Consumer(ABC):
    """Subclasses set ``name`` and ``wants`` and write ``handle``; the optional hooks are ``idle`` (every
    ``tick`` seconds when ``tick`` is set), ``drain`` (the bus closed and every event was handled),
    ``hear`` (spoken audio, with ``hears_audio``), ``on_failure`` and ``ended`` (last, on the consumer's
    thread, or in ``stop`` if it never started)."""

    name: ClassVar[str] = "consumer"
    wants: ClassVar[tuple[type[Event], ...]] = ()  # empty: every event
    queue_size: ClassVar[int] = 10_000
    tick: ClassVar[float | None] = None
    hears_audio: ClassVar[bool] = False  # also gets the spoken audio (``hear``), not only events
    keeps_video: ClassVar[bool] = False  # also gets what each source receives (``video_tap``)
    keeps_alert_files: ClassVar[bool] = False  # writes alerts' snapshots and clips (``Alert.snapshot``, ``.clip``)

    def __init__(self) -> None:
        self.failed: str | None = None
        self.when_ended: Callable[[], None] = lambda: None  # the owner hears that the thread is over
        self._bus: Bus | None = None
        self._sub: Subscription | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._finishing = threading.Event()
        self._halted = threading.Event()
        self._ended = threading.Event()
        self._last_t = 0.0

    # --- what a consumer writes ---
    @abstractmethod
    def handle(self, event: Event) -> None:
        """One wanted event, on the consumer's thread."""

    def idle(self) -> None:
        """Called every ``tick`` seconds (and after each event) when ``tick`` is set."""

    def drain(self) -> None:
        """The bus closed (or ``finish`` was asked) and every queued event was handled."""

    def hear(self, camera: CameraTag, chunk: AudioOut) -> None:
        """What a camera says, chunk by chunk as it goes to the player, for consumers with ``hears_audio``.
        Called on the speaker's thread: queue it and return (the player's clock does not wait)."""

    def video_tap(self, camera: CameraTag, source: Source) -> VideoTap | None:
        """Where ``source`` should hand what it receives, for consumers with ``keeps_video`` (None: nothing
        to keep from this one). Called before the camera starts."""
        return None

    def on_failure(self) -> None:
        """The consumer raised and is stopping: undo what others wait on (a gate, a lock)."""

    def ended(self) -> None:
        """Release files, clients and queues; runs once."""

    # --- ownership, from the session ---
    def attach(self, bus: Bus) -> None:
        """Subscribe (before the session starts, so no event is missed): to the session's bus for every
        camera, or to one camera's view of it (``Camera.bus``) for that camera alone."""
        self._bus = bus
        self._sub = bus.subscribe(self.name, self.queue_size, self._accepts)

    def _accepts(self, event: Event) -> bool:
        return not self.wants or isinstance(event, self.wants)

    def start(self) -> None:
        if self._sub is None:
            raise RuntimeError(f"consumer {self.name} must be attached to a bus before it starts")
        self._thread = threading.Thread(target=self._run, name=f"consumer-{self.name}", daemon=True)
        self._thread.start()

    def finish(self) -> None:
        """Handle what is queued, ``drain``, then end, without waiting for the bus to close."""
        self._finishing.set()

    def halt(self) -> None:
        """Its owner is stopping the session: what is queued is still handled, but the run did not end on
        its own, so there is no ``drain`` (a page told "stopped" is not then told "the video has ended")."""
        self._halted.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop now (what is still queued is not handled) and join the thread. Safe to call twice."""
        self._stop.set()
        if self._sub is not None:
            self._sub.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("consumer %s still running %.0f s after being told to stop", self.name, timeout)
        if thread is None:
            self._end()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the consumer has ended on its own (the bus closed); True when it has."""
        return self._ended.wait(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def backlog(self) -> int:
        """Events waiting to be handled."""
        return self._sub.backlog if self._sub is not None else 0

    @property
    def stopping(self) -> bool:
        """``stop`` was called: a long ``handle`` should return soon."""
        return self._stop.is_set()

    def publish(self, event: Event) -> None:
        """Put an event of the consumer's own on the bus (speech timing, an opinion, an error)."""
        if self._bus is not None:
            self._bus.publish(event)

    # --- the thread ---
    def _run(self) -> None:
        sub = self._sub
        assert sub is not None
        try:
            while not self._stop.is_set():
                event = sub.get(timeout=self.tick)
                if event is not None:
                    self._last_t = event.t
                    self.handle(event)
                elif sub.closed:
                    break
                if self._finishing.is_set() and not sub.backlog:
                    break
                if self.tick is not None and not self._stop.is_set():
                    self.idle()
            if not self._stop.is_set() and not self._halted.is_set():
                self.drain()
        except Exception as exc:  # a consumer never takes the session down, and never dies silently
            log.exception("consumer %s crashed", self.name)
            self.failed = f"{self.name} stopped: {type(exc).__name__}: {exc}"
            if self._bus is not None:
                self._bus.unsubscribe(sub)
            self.publish(ErrorEvent(t=self._last_t, message=self.failed))
            self.on_failure()
        finally:
            self._end()

    def _end(self) -> None:
        if self._ended.is_set():
            return
        try:
            self.ended()
        finally:
            self._ended.set()
            self.when_ended()
