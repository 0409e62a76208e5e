"""The shared session harness: run a session on real decoded video and a backend, get back every event.

Tests of the commentary loop, cameras, sources and speech build their session (one camera from a
backend, a profile and a tuning, or a ``Session`` they made themselves with more cameras), play it to
the end of its files and assert on the events (``play``, ``run_session``). Events are collected by a
``Consumer`` like every other listener, so a test sees what a consumer sees; the harness checks that
every thread stopped. Tests that act while a session runs (a camera that drops, a server restarted)
read its events as they come with a ``Watcher``, each wait with a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pipeline.backends.base import Backend
from pipeline.config import Tuning
from pipeline.consumers.base import Consumer
from pipeline.events import Event, SourceStatus
from pipeline.prompts import load_profiles
from pipeline.session import Session
from pipeline.sources.base import Source
from pipeline.sources.file import FileSource
from pipeline.sources.watchdog import STALL_AFTER
from pipeline.speech.speaker import SpeechOptions
from pipeline.watch.desk import WatchDesk, WatchOptions
from pipeline.watch.rules import RuleDefaults, parse_rule
from pipeline.watch.tracker import Cooldowns

SPEED = 4.0  # replay 4x faster than real time; every decision the loop makes uses media time
E = TypeVar("E", bound=Event)


class EventCollector(Consumer):
    """Keeps every event of the session, in order, with room for a long run."""

    name = "collector"
    queue_size = 100_000

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []

    def handle(self, event: Event) -> None:
        self.events.append(event)


@dataclass
class SessionRun:
    """A finished session and what it published."""

    session: Session
    events: list[Event]

    def of(self, kind: type[E]) -> list[E]:
        """The events of one type, in order."""
        return [e for e in self.events if isinstance(e, kind)]


def one_camera(
    backend: Backend,
    *,
    profile: str = "narrator",
    tuning: Tuning | None = None,
    speech: SpeechOptions | None = None,
    stall_after: float = STALL_AFTER,
    consumers: Iterable[Consumer] = (),
    name: str = "",
    watch: WatchDesk | None = None,
) -> Session:
    """A one-camera session as the front ends make it, on a profile from ``profiles/``."""
    return Session(
        backend,
        load_profiles()[profile],
        tuning or Tuning(),
        stall_after=stall_after,
        speech=speech,
        consumers=consumers,
        name=name,
        watch=watch,
    )


def watch_desk(
    backend: Backend,
    *rules: str,
    interval: float = 10.0,
    clip: float = 0.0,
    keeps_files: bool = False,
    camera_cooldown: float = 0.0,
    **defaults: float,
) -> WatchDesk:
    """The rules ("TEXT" or "NAME=TEXT") as a session gets them, judged by ``backend`` as at Start."""
    return WatchDesk(
        [parse_rule(rule, RuleDefaults(**defaults)) for rule in rules],
        RuleDefaults(**defaults),
        WatchOptions(interval, clip, keeps_files),
        Cooldowns(camera_cooldown),
        backend.rule_problem,
    )


def play(
    session: Session,
    *videos: Path | Source,
    speed: float = SPEED,
    during: Callable[[Session], None] | None = None,
    timeout: float = 90.0,
) -> SessionRun:
    """Start ``session`` on one video (a file path played at ``speed``, or any source) per camera, call
    ``during`` while it runs, wait for the session to be over (every camera done, every consumer
    drained) and stop it; every thread it started must have ended."""
    collector = EventCollector()
    session.add_consumer(collector)
    sources: Sequence[Source] = [v if isinstance(v, Source) else FileSource(str(v), rate=speed) for v in videos]
    session.start(*sources)
    try:
        if during is not None:
            during(session)
        assert session.join(timeout), "the session did not end at the end of its videos"
    finally:
        session.stop()
    for camera in session.cameras:
        assert not (camera.source and camera.source.running), "a source thread outlived the session"
        assert not camera.commentator.running, "a commentator thread outlived the session"
        assert not (camera.watcher and camera.watcher.running), "a watcher thread outlived the session"
    assert not any(c.running for c in session.consumers), "a consumer thread outlived the session"
    return SessionRun(session, collector.events)


def run_session(backend: Backend, video: Path | Source, *, speed: float = SPEED, during=None, **camera) -> SessionRun:
    """One camera on ``backend`` played to the end of ``video``: the common case in one call."""
    return play(one_camera(backend, **camera), video, speed=speed, during=during)


class Watcher:
    """A running session's events, read on the test's thread as they come, with a deadline for each wait."""

    def __init__(self, session: Session) -> None:
        self.sub = session.bus.subscribe("test", maxsize=100_000)
        self.seen: list[Event] = []

    def until(self, check: Callable[[Event], bool], what: str, timeout: float = 30) -> Event:
        """The first event from now on that passes ``check``; fails naming ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            event = self.sub.get(left)
            if event is None:
                break
            self.seen.append(event)
            if check(event):
                return event
        raise AssertionError(f"no {what} within {timeout} s; states: {self.states()}; last: {self.seen[-5:]}")

    def state(self, name: str, timeout: float = 30) -> SourceStatus:
        """Wait for the source to report ``name`` (live, stalled, ...)."""
        event = self.until(lambda e: isinstance(e, SourceStatus) and e.state == name, f"'{name}' status", timeout)
        assert isinstance(event, SourceStatus)
        return event

    def states(self) -> list[str]:
        return [e.state for e in self.seen if isinstance(e, SourceStatus)]
