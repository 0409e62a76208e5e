"""A camera: one source, its frame hub and its commentator (with its profile, preset, instructions and,
when it speaks, its speech gate and speaker), all publishing on the session's bus under its name.

A session holds one or more cameras and one bus; ``CameraBus`` is a camera's view of that bus: what the
camera publishes is stamped with its ``CameraTag``, and what its own consumers (its speaker) subscribe
to is only its events.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.backends.base import Backend
from pipeline.commentator import Commentator
from pipeline.config import Tuning
from pipeline.events import (
    Accepts,
    CameraStarted,
    CameraTag,
    ErrorEvent,
    Event,
    EventBus,
    SourceState,
    SourceStatus,
    Subscription,
)
from pipeline.frames import Frame
from pipeline.hub import FrameHub
from pipeline.prompts import Profile
from pipeline.sources.base import Source
from pipeline.sources.watchdog import STALL_AFTER, StallWatchdog
from pipeline.speech.gate import SpeechGate
from pipeline.speech.speaker import AudioOut, Speaker, SpeechOptions
from pipeline.watch.desk import WatchDesk
from pipeline.watch.watcher import Watcher


@dataclass(frozen=True)
class CameraSpec:
    """What a camera is made of, before it has a source. ``name`` defaults to the source's name and ``id``
    to a slug of the name (stable across runs for the same source)."""

    backend: Backend
    profile: Profile
    tuning: Tuning
    instructions: str = ""
    speech: SpeechOptions | None = None
    stall_after: float = STALL_AFTER
    name: str = ""
    id: str = ""
    preset: str = ""  # the preset's name, for logs and recordings (``tuning`` is its values)
    watch: WatchDesk | None = None  # the session's watch rules: each camera checks them on its own picture


def camera_id(name: str) -> str:
    """A stable, file- and URL-safe id from a camera's display name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:48] or "camera"


class CameraBus:
    """A camera's view of the session bus (see the module doc)."""

    def __init__(self, bus: EventBus, tag: CameraTag) -> None:
        self.session_bus = bus
        self.tag = tag

    def publish(self, event: Event) -> None:
        self.session_bus.publish(event if event.camera is not None else dataclasses.replace(event, camera=self.tag))

    def subscribe(self, name: str, maxsize: int = 1024, accepts: Accepts | None = None) -> Subscription:
        def ours(event: Event) -> bool:
            mine = event.camera is None or event.camera.id == self.tag.id
            return mine and (accepts is None or accepts(event))

        return self.session_bus.subscribe(f"{name}@{self.tag.id}", maxsize, ours)

    def unsubscribe(self, sub: Subscription) -> None:
        self.session_bus.unsubscribe(sub)

    def dropped(self) -> dict[str, int]:
        return self.session_bus.dropped()

    def backlog(self) -> int:
        return self.session_bus.backlog()


class Camera:
    """Owns its commentator, watchdog, source and speaker; ``on_done`` is told once it has finished (its
    commentary ended and everything was said)."""

    def __init__(
        self,
        bus: EventBus,
        spec: CameraSpec,
        on_done: Callable[[Camera], None],
        on_audio: Callable[[AudioOut], None] | None = None,
    ) -> None:
        self.spec = spec
        self.bus = CameraBus(bus, CameraTag(spec.id or camera_id(spec.name), spec.name))
        self.hub = FrameHub(self.bus, spec.tuning)
        speech = spec.speech
        self.gate = SpeechGate(speech.pause) if speech else None
        self.commentator = Commentator(
            self.hub,
            spec.backend,
            self.bus,
            spec.profile,
            spec.tuning,
            spec.instructions,
            on_exit=self._commentary_ended,
            gate=self.gate,
            model_voice=speech is not None and speech.engine is None,
        )
        self.speaker: Speaker | None = None
        if speech is not None and self.gate is not None:
            voice = lambda: self.commentator.profile.voice  # noqa: E731  # the profile can change live
            self.speaker = Speaker(self.bus, self.gate, speech, voice, self.media_now, on_audio)
            self.speaker.when_ended = self._speaker_ended
        self.watcher: Watcher | None = None
        if spec.watch is not None:
            self.watcher = Watcher(
                self.hub,
                spec.backend,
                self.bus,
                spec.watch,
                lambda: self.commentator.tuning,
                self.commentator.scheduler,
                lambda: self.tag.id,
            )
        self._on_done = on_done
        self._lock = threading.Lock()
        self._commentary_over = False
        self._speaker_over = self.speaker is None
        self._done = False
        self.source: Source | None = None
        self.watchdog: StallWatchdog | None = None

    @property
    def tag(self) -> CameraTag:
        return self.bus.tag

    def tag_for(self, source: Source) -> CameraTag:
        """The camera's id and name on ``source``: as the spec says, else from the source's name."""
        name = self.spec.name or source.display_name
        return CameraTag(self.spec.id or camera_id(name), name)

    def start(self, source: Source, tag: CameraTag | None = None) -> None:
        """Start reading ``source`` and commenting on it (a camera runs one source, once)."""
        if self.source is not None:
            raise RuntimeError("a camera runs one source; make a new session for another")
        self.source = source
        self.bus.tag = tag or self.tag_for(source)
        self.watchdog = StallWatchdog(source, self.spec.stall_after)
        spec = self.spec
        self.bus.publish(
            CameraStarted(
                t=0.0,
                source=source.display_name,
                kind=source.kind,
                profile=spec.profile.name,
                preset=spec.preset,
                instructions=spec.instructions,
                backend=spec.backend.description,
                speaks=self.speaker is not None,
            )
        )
        if self.speaker is not None:
            self.speaker.start()
        self.commentator.start()
        if self.watcher is not None:
            self.watcher.start()
        self.watchdog.start()
        source.start(self._on_frame, self._on_status)

    def _on_frame(self, frame: Frame) -> None:
        self.hub.push(frame)
        if self.watcher is not None:
            self.watcher.offer(frame)
        if self.watchdog is not None:
            self.watchdog.frame_arrived()

    def media_now(self) -> float:
        """Media time of the newest frame (0 before the first)."""
        return self.hub.latest.media_time if self.hub.latest else 0.0

    def _on_status(self, state: SourceState, detail: str) -> None:
        name = self.source.display_name if self.source else ""
        t = self.media_now()
        self.bus.publish(SourceStatus(t=t, state=state, detail=detail, source=name))
        if state in ("stalled", "reconnecting"):
            self.hub.mark_gap()
        if state == "failed":
            self.bus.publish(ErrorEvent(t=t, message=detail, fatal=True))
        if state in ("ended", "failed"):
            self.hub.mark_ended()

    def _commentary_ended(self) -> None:
        """The commentator finished (end of source, fatal error or stop): the speaker says what is left
        first, then the camera is done. Its rule checks end with it (their last clips finished)."""
        if self.watcher is not None:
            self.watcher.stop()
        with self._lock:
            self._commentary_over = True
            speaking = not self._speaker_over
        if speaking and self.speaker is not None:
            self.speaker.finish()  # when it has finished, the camera is done
        else:
            self._finished()

    def _speaker_ended(self) -> None:
        with self._lock:
            self._speaker_over = True
            over = self._commentary_over
        if over:
            self._finished()

    def _finished(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._on_done(self)

    @property
    def done(self) -> bool:
        """The commentary ended and everything was said."""
        with self._lock:
            return self._done

    @property
    def error(self) -> str | None:
        """Why the camera failed, or None if it ended normally (or is still running)."""
        if self.source is not None and self.source.error:
            return self.source.error
        return self.commentator.failed

    def stop(self, timeout: float = 10.0) -> None:
        """Stop generation, the source and speech; joins every thread. Safe to call twice."""
        self.commentator.stop(timeout)
        if self.watcher is not None:
            self.watcher.stop(timeout)
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.source is not None:
            self.source.stop(timeout)
        if self.speaker is not None:
            self.speaker.stop(timeout)
