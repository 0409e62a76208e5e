"""Per-tab pipelines: each browser tab (Gradio session hash) owns one Viewer; the model is shared.

A Viewer bundles a pipeline Session with its live view, its speech and a monitor thread that keeps
the status strip's numbers. Starting again in the same tab replaces the old Viewer cleanly; Stop,
closing the tab and shutting the app down all end in ``Viewer.close``, which joins every thread.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.backends.base import Choice
from pipeline.config import PresetFile, Settings, pick
from pipeline.errors import OnlookerError
from pipeline.events import (
    CommentaryDelta,
    CommentaryFinished,
    CommentaryStarted,
    Metrics,
    ModeChanged,
    SourceStatus,
)
from pipeline.prompts import Profile
from pipeline.session import Session
from pipeline.sources.base import Source
from pipeline.sources.file import FileSource
from pipeline.sources.resolve import open_source
from pipeline.sources.webcam import PushSource
from pipeline.speech.espeak import EspeakEngine
from pipeline.speech.sentences import SentenceSplitter
from webui.live import LiveView
from webui.status import StatusSnapshot

log = logging.getLogger(__name__)

MODES = ("Webcam", "Upload", "URL")


@dataclass(frozen=True)
class SourceRequest:
    """What the user picked in the source panel."""

    mode: str
    upload: str | None = None
    url: str | None = None


def make_source(request: SourceRequest) -> Source:
    """The Source for the chosen mode; a missing or bad input raises OnlookerError saying what to do."""
    if request.mode == "Webcam":
        return PushSource()
    if request.mode == "Upload":
        if not request.upload:
            raise OnlookerError("choose a video file to upload first")
        return FileSource(request.upload)
    if request.mode == "URL":
        if not (request.url or "").strip():
            raise OnlookerError("type a stream or camera URL first (rtsp://, http://, an HLS .m3u8, a YouTube page…)")
        return open_source(request.url or "")
    raise OnlookerError(f"unknown source mode '{request.mode}'; allowed: {', '.join(MODES)}")


class Viewer:
    """One tab's running pipeline: session, live view, monitor, subscriptions for chat and speech."""

    def __init__(self, choice: Choice, profile: Profile, preset: PresetFile, preset_name: str, settings: Settings):
        self.token = secrets.token_urlsafe(24)
        self.profile = profile
        tuning = pick(preset_name, preset.presets, "preset", "preset")
        self.session = Session(choice.backend, profile, tuning, settings.instructions)
        self.live = LiveView(self.session.hub, sync=settings.live_sync)
        self.status = StatusSnapshot()
        self.chat = self.session.bus.subscribe("chat", maxsize=10_000)
        self.speech = self.session.bus.subscribe("speech", maxsize=256)
        self._monitor_sub = self.session.bus.subscribe("monitor", maxsize=10_000)
        self._captures: deque[float] = deque(maxlen=32)
        self._monitor = threading.Thread(target=self._watch, name="viewer-monitor", daemon=True)
        self.source: Source | None = None

    def start(self, source: Source) -> None:
        self.source = source
        self._monitor.start()
        self.session.start(source)

    def push(self, image: np.ndarray) -> bool:
        """Hand a webcam frame to the pipeline; False when this viewer does not take pushed frames."""
        if isinstance(self.source, PushSource):
            self.source.push(image)
            return True
        return False

    def set_profile(self, profile: Profile) -> None:
        self.profile = profile
        self.session.commentator.set_profile(profile)

    def _watch(self) -> None:
        """Keep the status strip's numbers from the bus; ends when the bus closes."""
        for event in self._monitor_sub:
            if isinstance(event, SourceStatus):
                self.status.source = event.state
            elif isinstance(event, ModeChanged):
                self.status.mode = event.mode
            elif isinstance(event, Metrics) and "frame_to_first_delta_ms" in event.stages:
                latency = event.stages["frame_to_first_delta_ms"]
                self.status.latency_ms = latency
                self.live.observe_latency(latency / 1000)
            elif isinstance(event, CommentaryFinished) and not event.suppressed:
                self.status.comments += 1

    def snapshot(self) -> StatusSnapshot:
        hub = self.session.hub
        window = hub.window.snapshot()
        span = window[-1].media_time - window[0].media_time if len(window) > 1 else 0.0
        self.status.capture_fps = (len(window) - 1) / span if span > 0 else 0.0
        self.status.display_fps = self.live.display_fps()
        return self.status

    def close(self) -> None:
        """Stop everything this viewer started and wait for it."""
        self.session.stop()
        self.live.close()
        self._monitor.join(5)


class SessionManager:
    """All viewers of one app, keyed by Gradio session hash; one shared backend for all."""

    def __init__(self, settings: Settings, choice: Choice, presets: PresetFile, profiles: dict[str, Profile]) -> None:
        self.settings = settings
        self.choice = choice
        self.presets = presets
        self.profiles = profiles
        self.speech_engine = EspeakEngine() if settings.tts == "espeak" else None
        self._viewers: dict[str, Viewer] = {}
        self._sync: dict[str, bool] = {}  # per-tab choice of the sync toggle, kept across restarts
        self._lock = threading.Lock()

    def start(self, key: str, request: SourceRequest, profile: str, preset: str) -> Viewer:
        """Start (or restart) this tab's pipeline. Bad input raises OnlookerError; nothing is left running."""
        chosen = pick(profile, self.profiles, "profile", "profile")
        source = make_source(request)
        viewer = Viewer(self.choice, chosen, self.presets, preset, self.settings)
        viewer.live.sync = self._sync.get(key, self.settings.live_sync)
        self.stop(key)
        with self._lock:
            self._viewers[key] = viewer
        viewer.start(source)
        return viewer

    def get(self, key: str) -> Viewer | None:
        with self._lock:
            return self._viewers.get(key)

    def by_token(self, token: str) -> Viewer | None:
        with self._lock:
            return next((v for v in self._viewers.values() if secrets.compare_digest(v.token, token)), None)

    def stop(self, key: str) -> bool:
        """End this tab's pipeline if it has one; True when something was stopped."""
        with self._lock:
            viewer = self._viewers.pop(key, None)
        if viewer is None:
            return False
        viewer.close()
        return True

    def forget(self, key: str) -> None:
        """The tab is gone for good: stop its pipeline and drop its preferences."""
        self.stop(key)
        self._sync.pop(key, None)

    def set_profile(self, key: str, name: str) -> None:
        viewer = self.get(key)
        if viewer is not None:
            viewer.set_profile(pick(name, self.profiles, "profile", "profile"))

    def set_preset(self, key: str, name: str) -> None:
        viewer = self.get(key)
        if viewer is not None:
            viewer.session.commentator.set_tuning(pick(name, self.presets.presets, "preset", "preset"))

    def set_sync(self, key: str, on: bool) -> None:
        """Delay this tab's live picture by the commentary latency (on) or show frames at once (off)."""
        self._sync[key] = on
        viewer = self.get(key)
        if viewer is not None:
            viewer.live.sync = on

    def instruct(self, key: str, text: str) -> bool:
        viewer = self.get(key)
        if viewer is None or not text.strip():
            return False
        viewer.session.commentator.add_instruction(text)
        return True

    def close_all(self) -> None:
        with self._lock:
            keys = list(self._viewers)
        for key in keys:
            self.stop(key)

    def active_count(self) -> int:
        with self._lock:
            return len(self._viewers)

    def speech_chunks(self, viewer: Viewer) -> Iterator[tuple[int, np.ndarray]]:
        """Spoken comments, sentence by sentence as each completes (speech starts before the comment
        ends); a comment suppressed at its end (empty, "...", duplicate) loses its unspoken rest."""
        if self.speech_engine is None:
            return
        splitters: dict[int, SentenceSplitter] = {}
        for event in viewer.speech:
            sentences: list[str] = []
            if isinstance(event, CommentaryStarted):
                splitters[event.comment_id] = SentenceSplitter()
            elif isinstance(event, CommentaryDelta) and event.comment_id in splitters:
                sentences = splitters[event.comment_id].feed(event.text)
            elif isinstance(event, CommentaryFinished) and event.comment_id in splitters:
                rest = splitters.pop(event.comment_id).flush()
                sentences = [rest] if rest and not event.suppressed else []
            for sentence in sentences:
                started = time.perf_counter()
                try:
                    speech = self.speech_engine.synthesize(sentence, viewer.profile.voice)
                except OnlookerError as exc:
                    log.warning("speech failed: %s", exc)
                    continue
                log.debug("spoke %.1f s of audio in %.0f ms", speech.seconds, 1000 * (time.perf_counter() - started))
                yield speech.sample_rate, speech.samples
