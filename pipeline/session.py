"""A session: one bus, one or more cameras on it, and the consumers that listen, started and ended together.

It is built in one place, ``build_session``, from the run's settings plus the consumers the front end
brings (the CLI's transcript printer and events file, the web page's chat and status feeds); consumers
that come from settings (a second opinion, later the recorder and alerts) are added from
``pipeline.consumers.REGISTRY``. The bus closes once every camera is done (its commentary ended and
everything was said), and the consumers then drain what is queued and end.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from pipeline.backends.base import Backend
from pipeline.camera import Camera, CameraSpec
from pipeline.commentator import Commentator
from pipeline.config import Settings, Tuning
from pipeline.consumers import consumers_from_settings
from pipeline.consumers.base import Consumer
from pipeline.events import CameraTag, EventBus
from pipeline.hub import FrameHub
from pipeline.prompts import Profile
from pipeline.sources.base import Source
from pipeline.sources.watchdog import STALL_AFTER, StallWatchdog
from pipeline.speech.gate import SpeechGate
from pipeline.speech.speaker import AudioOut, Speaker, SpeechOptions
from pipeline.watch.desk import WatchDesk, watch_desk

C = TypeVar("C", bound=Consumer)
FINISH_S = 2.0  # how long a stopped session's consumers get, all together, to handle what is queued


class Session:
    """Owns every thread it starts; ``stop`` ends them all. Backends are shared, not owned.

    The arguments describe the first camera; ``add_camera`` adds more before ``start``. ``hub``,
    ``commentator``, ``speaker``, ``gate``, ``source`` and ``watchdog`` are the first camera's (the web
    app and the CLI run one)."""

    def __init__(
        self,
        backend: Backend,
        profile: Profile,
        tuning: Tuning,
        instructions: str = "",
        stall_after: float = STALL_AFTER,
        speech: SpeechOptions | None = None,
        consumers: Iterable[Consumer] = (),
        on_audio: Callable[[AudioOut], None] | None = None,
        name: str = "",
        preset: str = "",
        watch: WatchDesk | None = None,
    ) -> None:
        self.bus = EventBus()
        self.watch = watch  # the rules every camera checks (the page changes them live)
        self.cameras: list[Camera] = []
        self.consumers: list[Consumer] = []
        self._started = False
        self._lock = threading.Lock()
        self._cameras_over = threading.Event()  # every camera done: what ``join`` waits for first
        spec = CameraSpec(backend, profile, tuning, instructions, speech, stall_after, name, preset=preset, watch=watch)
        self.add_camera(spec, on_audio)
        for consumer in consumers:
            self.add_consumer(consumer)

    def add_camera(self, spec: CameraSpec, on_audio: Callable[[AudioOut], None] | None = None) -> Camera:
        """Another camera on this session's bus (before ``start``); its id must be unique here."""
        if self._started:
            raise RuntimeError("cameras are added before the session starts")
        camera = Camera(self.bus, spec, self._camera_done, on_audio)
        if spec.id and any(c.tag.id == spec.id for c in self.cameras):
            raise ValueError(f"camera id '{spec.id}' is already in this session")
        self.cameras.append(camera)
        return camera

    def consumer(self, kind: type[C]) -> C | None:
        """The session's consumer of this class (the recorder, say), or None."""
        return next((c for c in self.consumers if isinstance(c, kind)), None)

    def add_consumer(self, consumer: Consumer) -> None:
        """A consumer of every camera's events (before ``start``, so it misses none)."""
        if self._started:
            raise RuntimeError("consumers are added before the session starts")
        consumer.attach(self.bus)
        self.consumers.append(consumer)

    def start(self, *sources: Source) -> None:
        """Start the consumers, then each camera on its source, in order (a session runs once)."""
        if self._started:
            raise RuntimeError("a session runs once; create a new Session for another run")
        if len(sources) != len(self.cameras):
            raise ValueError(f"this session has {len(self.cameras)} camera(s) and was given {len(sources)} source(s)")
        self._started = True
        for consumer in self.consumers:
            consumer.start()
        taken: set[str] = set()
        for camera, source in zip(self.cameras, sources, strict=True):
            tag = camera.tag_for(source)
            number = 1
            while tag.id in taken:  # two cameras on the same source: -2, -3…
                number += 1
                tag = CameraTag(f"{camera.tag_for(source).id}-{number}", tag.name)
            taken.add(tag.id)
            self._connect(camera, source, tag)
            camera.start(source, tag)

    def _connect(self, camera: Camera, source: Source, tag: CameraTag) -> None:
        """Consumers that hear the speech or keep the video get them from this camera."""
        for consumer in self.consumers:
            if consumer.hears_audio and camera.speaker is not None:
                camera.speaker.listen(functools.partial(consumer.hear, tag))
            if consumer.keeps_video and source.video_tap is None:
                source.video_tap = consumer.video_tap(tag, source)

    def _camera_done(self, _camera: Camera) -> None:
        with self._lock:
            finished = all(c.done for c in self.cameras)
        if finished:
            self.bus.close()  # consumers drain what is queued, then end
            self._cameras_over.set()

    # --- the first camera, for the one-camera front ends ---
    @property
    def camera(self) -> Camera:
        return self.cameras[0]

    @property
    def hub(self) -> FrameHub:
        return self.camera.hub

    @property
    def commentator(self) -> Commentator:
        return self.camera.commentator

    @property
    def speaker(self) -> Speaker | None:
        return self.camera.speaker

    @property
    def gate(self) -> SpeechGate | None:
        return self.camera.gate

    @property
    def source(self) -> Source | None:
        return self.camera.source

    @property
    def watchdog(self) -> StallWatchdog | None:
        return self.camera.watchdog

    def media_now(self) -> float:
        return self.camera.media_now()

    @property
    def error(self) -> str | None:
        """Why the session failed (the first camera that failed), or None if it ended normally."""
        return next((c.error for c in self.cameras if c.error), None)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every camera, close the bus and stop the consumers; joins every thread. Safe to call twice.

        Consumers handle what is already queued (the recorder keeps the last events) within ``FINISH_S``,
        but do not ``drain``: the session was stopped, it did not end."""
        for consumer in self.consumers:
            consumer.halt()
        for camera in self.cameras:
            camera.stop(timeout)
        self.bus.close()
        deadline = time.monotonic() + FINISH_S
        for consumer in self.consumers:
            consumer.join(max(deadline - time.monotonic(), 0.0))
            consumer.stop(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every camera's commentary has ended; True when it has."""
        return all(camera.commentator.join(timeout) for camera in self.cameras)

    def join(self, timeout: float | None = None) -> bool:
        """Block until the session is over: every camera done and every consumer ended; True when it is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        left = lambda: None if deadline is None else max(deadline - time.monotonic(), 0.0)  # noqa: E731
        if not self._cameras_over.wait(left()):
            return False
        return all(consumer.join(left()) for consumer in self.consumers)


def build_session(
    settings: Settings,
    backend: Backend,
    profile: Profile,
    tuning: Tuning,
    *,
    speech: SpeechOptions | None = None,
    consumers: Iterable[Consumer] = (),
    on_audio: Callable[[AudioOut], None] | None = None,
    preset: str = "",
) -> Session:
    """The one place a session is made: one camera from the run's settings, the front end's consumers, the
    consumers the settings ask for (``pipeline.consumers.REGISTRY``) and the watch rules (the settings' and
    the profile's; a rule the backend cannot judge is a ConfigError here, before anything starts)."""
    everyone = [*consumers, *consumers_from_settings(settings)]
    keeps_files = any(c.keeps_alert_files for c in everyone)
    try:
        return Session(
            backend,
            profile,
            tuning,
            settings.instructions,
            speech=speech,
            consumers=everyone,
            on_audio=on_audio,
            preset=preset,
            watch=watch_desk(settings, profile, backend, keeps_files),
        )
    except BaseException:
        for consumer in everyone:
            consumer.stop()  # made, never started: their files and clients are released
        raise
