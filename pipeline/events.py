"""Typed events and the per-session bus that fans them out to independent consumers.

Producers never block: each subscriber has a bounded queue, and each event class says how it is
delivered to a consumer that lags (``Event.delivery``):

* ``always``: control and result events (source status, mode, scene cut, commentary start and end,
  speech, opinions, metrics, errors) go in past the bound if need be. They are few, and losing a
  ``commentary_end`` or a fatal ``error`` would leave a consumer wrong for good.
* ``merge``: a text delta is folded into the newest queued delta of the same comment, so none of the
  text is lost and the queue does not grow.
* ``drop``: audio chunks give way, oldest first, counted per type in ``Subscription.dropped`` and in
  the metrics (``bus_dropped``).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np


def clock(seconds: float) -> str:
    """Media time as mm:ss.s (or h:mm:ss.s) for the transcript."""
    minutes, secs = divmod(max(seconds, 0.0), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes:02d}:{secs:04.1f}"


SourceState = Literal["idle", "connecting", "live", "stalled", "reconnecting", "ended", "failed"]
Trigger = Literal["start", "feed_back", "scene_cut", "active", "heartbeat"]  # why a comment is asked for
Delivery = Literal["always", "merge", "drop"]


@dataclass(frozen=True, slots=True)
class CameraTag:
    """Which camera an event is about: ``id`` is stable (events files, recordings, rules key on it),
    ``name`` is what people read (by default the source's name, credentials masked)."""

    id: str
    name: str


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of all bus events: ``t`` is media time (s), ``wall`` is Unix time, ``camera`` names the camera
    (None for events about the whole session)."""

    type: ClassVar[str] = "event"
    delivery: ClassVar[Delivery] = "always"  # to a consumer that lags: always, merge or drop (see the module doc)
    t: float
    wall: float = field(default_factory=time.time)
    camera: CameraTag | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping with ``type`` first, as the ``--events`` file contract requires."""
        return {"type": self.type, **dataclasses.asdict(self)}


@dataclass(frozen=True, kw_only=True)
class SourceStatus(Event):
    """Source state: connecting, live, stalled, reconnecting, ended or failed (with ``detail``)."""

    type: ClassVar[str] = "source_status"
    state: SourceState
    detail: str = ""
    source: str = ""


@dataclass(frozen=True, kw_only=True)
class CameraStarted(Event):
    """A camera begins: what it watches and how, for logs and recordings (the source's credentials masked)."""

    type: ClassVar[str] = "camera_start"
    source: str
    kind: str  # file, stream, mjpeg, webcam
    profile: str
    preset: str
    instructions: str
    backend: str
    speaks: bool


@dataclass(frozen=True, kw_only=True)
class ModeChanged(Event):
    """The commentator switched between ``idle`` and ``active``."""

    type: ClassVar[str] = "mode"
    mode: str
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class SceneCut(Event):
    """A hard cut; ``t`` is the media time of the first frame after it."""

    type: ClassVar[str] = "scene_cut"
    score: float


@dataclass(frozen=True, kw_only=True)
class CommentaryStarted(Event):
    """A comment is being generated about the frames up to media time ``t``."""

    type: ClassVar[str] = "commentary_start"
    comment_id: int
    trigger: Trigger
    frames: int
    frame_wall: float = 0.0  # Unix time the newest frame arrived, for "speech behind the picture"


@dataclass(frozen=True, kw_only=True)
class CommentaryDelta(Event):
    """A streamed piece of the comment's text."""

    type: ClassVar[str] = "commentary_delta"
    delivery: ClassVar[Delivery] = "merge"
    comment_id: int
    text: str


@dataclass(frozen=True, kw_only=True)
class CommentaryFinished(Event):
    """The comment is complete; ``suppressed`` names why it must not be shown (empty = keep it)."""

    type: ClassVar[str] = "commentary_end"
    comment_id: int
    text: str
    suppressed: str = ""


@dataclass(frozen=True, kw_only=True)
class CommentaryAudio(Event):
    """A chunk of the model's own voice for a comment (backends that speak, e.g. MiniCPM-o)."""

    type: ClassVar[str] = "commentary_audio"
    delivery: ClassVar[Delivery] = "drop"
    comment_id: int
    sample_rate: int
    samples: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The audio itself stays out of the JSON events file; its length goes in."""
        return {
            "type": self.type,
            "t": self.t,
            "wall": self.wall,
            "camera": dataclasses.asdict(self.camera) if self.camera else None,
            "comment_id": self.comment_id,
            "seconds": round(len(self.samples) / self.sample_rate, 3),
        }


@dataclass(frozen=True, kw_only=True)
class SpeechStarted(Event):
    """A comment's audio was handed to the player: ``wait_ms`` after its first sentence was
    complete, to start playing at media time ``at``, ``behind_s`` seconds after its newest frame
    arrived."""

    type: ClassVar[str] = "speech_start"
    comment_id: int
    at: float
    wait_ms: float
    behind_s: float


@dataclass(frozen=True, kw_only=True)
class SpeechEnded(Event):
    """The player has finished a comment's audio (by the playback clock)."""

    type: ClassVar[str] = "speech_end"
    comment_id: int


@dataclass(frozen=True, kw_only=True)
class SpeechSkipped(Event):
    """A comment was not spoken (or not to the end): ``reason`` says why."""

    type: ClassVar[str] = "speech_skip"
    comment_id: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class Opinion(Event):
    """A second model's answer about the recent comments (a summary, a translation, an alert)."""

    type: ClassVar[str] = "opinion"
    task: str
    text: str
    alert: bool = False


@dataclass(frozen=True, kw_only=True)
class Metrics(Event):
    """Per-stage latencies in milliseconds for one comment, plus pipeline counters."""

    type: ClassVar[str] = "metrics"
    comment_id: int
    stages: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class ErrorEvent(Event):
    """Something failed; ``message`` says what and what to do."""

    type: ClassVar[str] = "error"
    message: str
    fatal: bool = False


AlertState = Literal["started", "cleared"]
Answer = Literal["yes", "no", "none"]  # "none": the answer could not be read (no verdict)


@dataclass(frozen=True, kw_only=True)
class RuleCheck(Event):
    """One watch rule checked on the newest frames: the model's ``answer`` (yes, no, or none when it could not
    be read), how sure and why, what prompted the check (motion, scene_cut, interval) and what it took (ms).
    ``text`` is the rule's words, so a consumer that meets a rule first here (added on the page) can name it."""

    type: ClassVar[str] = "watch_check"
    rule: str
    answer: Answer
    confidence: float
    reason: str
    trigger: str
    ms: float
    text: str = ""


def _without(event: Event, *names: str) -> dict[str, Any]:
    """``to_dict`` less the bulky bytes fields (they travel on the bus, never into the JSON events file)."""
    data = Event.to_dict(event)
    for name in names:
        data.pop(name, None)
    return data


@dataclass(frozen=True, kw_only=True)
class Alert(Event):
    """A watch rule started or cleared on a camera. ``snapshot`` and ``clip`` are paths inside the session's
    recording folder ("" when the session is not recorded); ``jpeg`` is the snapshot itself, for deliveries."""

    type: ClassVar[str] = "alert"
    alert_id: str
    rule: str
    text: str  # the rule in the user's words
    state: AlertState
    confidence: float
    reason: str
    snapshot: str = ""
    clip: str = ""
    jpeg: bytes = field(default=b"", repr=False)

    def to_dict(self) -> dict[str, Any]:
        return _without(self, "jpeg")


@dataclass(frozen=True, kw_only=True)
class AlertClip(Event):
    """The short clip around an alert is ready (``mp4``, for the recorder to keep at ``clip``)."""

    type: ClassVar[str] = "alert_clip"
    alert_id: str
    rule: str
    clip: str
    seconds: float
    mp4: bytes = field(default=b"", repr=False)

    def to_dict(self) -> dict[str, Any]:
        return _without(self, "mp4")


DeliveryState = Literal["ok", "retrying", "down"]


@dataclass(frozen=True, kw_only=True)
class DeliveryStatus(Event):
    """How an alert delivery (webhook, MQTT, push) is doing: ``sent``, ``queued`` and ``dropped`` (the bounded
    queue overflowed while the receiver was down) so far, and the last problem."""

    type: ClassVar[str] = "delivery"
    name: str
    state: DeliveryState
    sent: int
    queued: int
    dropped: int
    detail: str = ""


MERGE_LOOKBACK = 256  # queued events searched for a delta of the same comment to merge into
Accepts = Callable[["Event"], bool]


class Subscription:
    """One consumer's bounded view of the bus; iterate it, or ``get`` with a timeout."""

    def __init__(self, name: str, maxsize: int, accepts: Accepts | None = None) -> None:
        self.name = name
        self.accepts = accepts  # which events this consumer wants (None: all); the rest never queue
        self.dropped: Counter[str] = Counter()  # high-rate events lost to lag, by type
        self.merged = 0  # text deltas folded into the one before them
        self._droppable = 0  # "drop" events queued: no scan for one when there is none
        self._items: deque[Event] = deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self._closed = False

    def _put(self, event: Event) -> None:
        if self.accepts is not None and not self.accepts(event):
            return
        with self._cond:
            if self._closed:
                return
            if len(self._items) >= self._maxsize and not self._make_room(event):
                return
            self._items.append(event)
            self._droppable += event.delivery == "drop"
            self._cond.notify()

    def _make_room(self, event: Event) -> bool:
        """The queue is full: whether ``event`` still goes in (holding the lock)."""
        if isinstance(event, CommentaryDelta):  # its comment's deltas are among the newest: look a little way back
            for i in range(len(self._items) - 1, max(len(self._items) - MERGE_LOOKBACK, 0) - 1, -1):
                queued = self._items[i]
                if isinstance(queued, CommentaryDelta) and queued.comment_id == event.comment_id:
                    self._items[i] = dataclasses.replace(queued, text=queued.text + event.text)
                    self.merged += 1
                    self._cond.notify()
                    return False
        for i, queued in enumerate(self._items if self._droppable else ()):
            if queued.delivery == "drop":
                del self._items[i]
                self._droppable -= 1
                self.dropped[queued.type] += 1
                return True
        if event.delivery == "drop":
            self.dropped[event.type] += 1
            return False
        return True  # control and result events, and a comment's first delta, always go in

    def close(self) -> None:
        """End iteration once the queued events are consumed."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Event | None:
        """Next event, or None on timeout or when closed and drained."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if not self._items:
                return None
            event = self._items.popleft()
            self._droppable -= event.delivery == "drop"
            return event

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed and not self._items

    @property
    def backlog(self) -> int:
        """Events queued and not yet taken: how far this consumer lags."""
        with self._cond:
            return len(self._items)

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self.get()
            if event is None:
                return
            yield event


class EventBus:
    """Fan-out of events to subscribers; ``publish`` is non-blocking and thread-safe."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self._closed = False

    def subscribe(self, name: str, maxsize: int = 1024, accepts: Accepts | None = None) -> Subscription:
        sub = Subscription(name, maxsize, accepts)
        with self._lock:
            if self._closed:
                sub.close()
            self._subs.append(sub)
        return sub

    def publish(self, event: Event) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub._put(event)

    def close(self) -> None:
        """Close every subscription: consumers drain what is queued, then stop."""
        with self._lock:
            self._closed = True
            subs = list(self._subs)
        for sub in subs:
            sub.close()

    def unsubscribe(self, sub: Subscription) -> None:
        """A consumer leaves (it failed or was closed): nothing more queues for it."""
        sub.close()
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def dropped(self) -> dict[str, int]:
        """High-rate events lost per slow subscriber, for the metrics stream."""
        with self._lock:
            return {s.name: s.dropped.total() for s in self._subs if s.dropped}

    def backlog(self) -> int:
        """The longest queue of any subscriber: how far the slowest consumer lags, for the metrics."""
        with self._lock:
            subs = list(self._subs)
        return max((s.backlog for s in subs), default=0)


class Bus(Protocol):
    """What producers and consumers need of a bus: the session's ``EventBus`` or one camera's view of it."""

    def publish(self, event: Event) -> None: ...

    def subscribe(self, name: str, maxsize: int = 1024, accepts: Accepts | None = None) -> Subscription: ...

    def unsubscribe(self, sub: Subscription) -> None: ...

    def dropped(self) -> dict[str, int]: ...

    def backlog(self) -> int: ...
