"""Per-tab pipelines: each browser tab (Gradio session hash) owns one Viewer; the model is shared.

A Viewer bundles a pipeline Session with its live view, a speech pump and a monitor thread, all of
which write to the tab's channel (``webui.channel``: one WebSocket carries picture, speech, chat and
status). Each Start is a new run of the tab's channel, so the page drops whatever the old run still
sends. Starting again in the same tab replaces the old Viewer cleanly; Stop, closing the tab (its
channel drops) and shutting the app down all end in ``Viewer.close``, which joins every thread.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.backends.base import Choice
from pipeline.config import PresetFile, Settings, pick
from pipeline.errors import OnlookerError, SourceError
from pipeline.events import (
    CommentaryFinished,
    Metrics,
    ModeChanged,
    SourceStatus,
)
from pipeline.prompts import Profile
from pipeline.second_opinion import OpinionOptions
from pipeline.session import Session
from pipeline.sources.base import Source
from pipeline.sources.file import FileSource
from pipeline.sources.guard import UrlGuard, is_loopback
from pipeline.sources.resolve import open_source
from pipeline.sources.urls import mask_url
from pipeline.sources.webcam import PushSource
from pipeline.speech.choice import choose_speech
from pipeline.speech.engines import Speech
from pipeline.speech.narration import NarrationTrack
from pipeline.speech.speaker import SpeechOptions
from pipeline.speech.transcribe import find_transcriber
from webui.channel import TabChannel
from webui.chat import chat_op
from webui.live import LiveView
from webui.status import StatusSnapshot

log = logging.getLogger(__name__)

MODES = ("Webcam", "Upload", "URL")
NARRATION_LIMIT = 3600.0  # seconds of media timeline a tab's saved narration covers (~170 MB at most)


@dataclass(frozen=True)
class SourceRequest:
    """What the user picked in the source panel."""

    mode: str
    upload: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class UploadLimits:
    """The largest and the longest video file a visitor may upload; 0 means no limit.

    Uploads come from anyone who can reach the app, and a file is played whole at its native rate, so a
    20 GB or ten-hour file would hold a session (and the disk Gradio copied it to) for hours.
    """

    megabytes: int = 0
    minutes: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(settings.max_upload_mb, settings.max_upload_minutes)

    @property
    def max_bytes(self) -> int | None:
        """The size limit in bytes, as Gradio's ``max_file_size`` takes it (None: no limit)."""
        return self.megabytes * 1024 * 1024 or None

    def open(self, upload: str) -> FileSource:
        """The FileSource for an uploaded file, refused when it is over a limit: the size is checked before
        FFmpeg opens the file, the duration (from the container) right after."""
        path = Path(upload)
        size = path.stat().st_size if path.is_file() else 0
        if self.max_bytes and size > self.max_bytes:
            raise OnlookerError(
                f"{path.name}: the file is {size / 1024**2:,.0f} MB, over this app's upload limit of "
                f"{self.megabytes} MB (--max-upload-mb / ONLOOKER_MAX_UPLOAD_MB); trim or re-encode it smaller"
            )
        try:
            source = FileSource(path)
        except SourceError as exc:  # the visitor knows their file by its name, not by Gradio's temporary path
            raise SourceError(str(exc).replace(str(path), path.name)) from None
        if self.minutes and source.duration and source.duration > self.minutes * 60:
            length = time.strftime("%H:%M:%S", time.gmtime(source.duration))
            raise OnlookerError(
                f"{path.name}: the video is {length} long, over this app's limit of {self.minutes:g} minutes "
                "(--max-upload-minutes / ONLOOKER_MAX_UPLOAD_MINUTES); trim it shorter"
            )
        return source


def _glibc() -> ctypes.CDLL | None:
    """glibc, for its allocator's knobs; None elsewhere (musl, macOS: their allocators decide)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Fewer glibc heap arenas (one per thread by default, up to 8 per core), so the memory a closed
    tab's threads freed can be handed back by ``release_memory``; call before the threads start."""
    if (libc := _glibc()) is not None:
        libc.mallopt(-8, arenas)  # M_ARENA_MAX


def release_memory() -> None:
    """Hand a closed viewer's memory back to the system. glibc keeps freed heap in per-thread arenas,
    so without a trim a server that ran three tabs for ten minutes stayed ~90 MB above idle."""
    gc.collect()
    if (libc := _glibc()) is not None:
        libc.malloc_trim(0)


def source_label(request: SourceRequest) -> str:
    """What the page says it is starting: the file's name or the URL without its password."""
    if request.mode == "Upload":
        return Path(request.upload).name if request.upload else "a video file"
    if request.mode == "URL":
        return mask_url((request.url or "").strip())
    return "your camera"


def make_source(
    request: SourceRequest,
    guard: UrlGuard | None = None,
    rtsp_transport: str = "tcp",
    limits: UploadLimits | None = None,
) -> Source:
    """The Source for the chosen mode; a missing or bad input, an upload over the ``limits``, or a URL a
    visitor of a shared app may not open (``guard``), raises OnlookerError saying what to do."""
    if request.mode == "Webcam":
        return PushSource()
    if request.mode == "Upload":
        if not request.upload:
            raise OnlookerError("choose a video file to upload first")
        return (limits or UploadLimits()).open(request.upload)
    if request.mode == "URL":
        if not (request.url or "").strip():
            raise OnlookerError("type a stream or camera URL first (rtsp://, http://, an HLS .m3u8, a YouTube page…)")
        url = guard.check(request.url or "") if guard is not None else request.url or ""
        return open_source(url, guard=guard, rtsp_transport=rtsp_transport)
    raise OnlookerError(f"unknown source mode '{request.mode}'; allowed: {', '.join(MODES)}")


class Viewer:
    """One tab's running pipeline: session, live view, monitor and speech pump, all sending to one run
    of the tab's channel."""

    def __init__(
        self,
        channel: TabChannel,
        run: int,
        choice: Choice,
        profile: Profile,
        preset: PresetFile,
        preset_name: str,
        settings: Settings,
        speech: SpeechOptions | None = None,
    ):
        self.channel = channel
        self.run = run
        self.profile = profile
        tuning = pick(preset_name, preset.presets, "preset", "preset")
        self.session = Session(
            choice.backend,
            profile,
            tuning,
            settings.instructions,
            speech=speech,
            opinion=OpinionOptions.from_settings(settings),
        )
        self.live: LiveView | None = None
        self.sync = settings.live_sync
        self.status = StatusSnapshot()
        self.narration = NarrationTrack(max_seconds=NARRATION_LIMIT)  # what the player was sent, to save
        self._monitor_sub = self.session.bus.subscribe("monitor", maxsize=10_000)
        self._monitor = threading.Thread(target=self._watch, name="viewer-monitor", daemon=True)
        self._speech = threading.Thread(target=self._pump_speech, name="viewer-speech", daemon=True)
        self._stopped = threading.Event()
        self.source: Source | None = None

    def start(self, source: Source) -> None:
        self.source = source
        if not isinstance(source, PushSource):  # the page shows its own camera preview, with no delay
            self.live = LiveView(self.session.hub, self._offer_picture, sync=self.sync)
        self._monitor.start()
        self._speech.start()
        self.session.start(source)

    def _offer_picture(self, wall_time: float, jpeg: bytes) -> None:
        self.channel.offer_picture(self.run, wall_time, jpeg)

    def set_sync(self, on: bool) -> None:
        self.sync = on
        if self.live is not None:
            self.live.sync = on

    def _pump_speech(self) -> None:
        """The speaker's paced chunks → the page (stamped with when they play) and the saved narration."""
        speaker = self.session.speaker
        if speaker is None:
            return
        for chunk in speaker.outputs():
            self.narration.add(chunk.media_time, Speech(chunk.sample_rate, chunk.samples))
            plays_at = time.time() + (chunk.plays_at - time.monotonic())
            self.channel.send_audio(self.run, plays_at, chunk.media_time, chunk.sample_rate, chunk.samples)

    def push_jpeg(self, jpeg: bytes) -> None:
        """A JPEG from the page's camera into the pipeline; ignored unless this viewer runs a webcam
        source, and skipped when it cannot be decoded (the next one comes 0.1 s later)."""
        if not isinstance(self.source, PushSource):
            return
        try:
            image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        except cv2.error:  # an empty frame
            return
        if image is not None:
            self.source.push(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))

    def set_profile(self, profile: Profile) -> None:
        self.profile = profile
        self.session.commentator.set_profile(profile)

    def _watch(self) -> None:
        """Chat operations and the status strip's numbers from the bus; when the bus closes (the source
        ended and everything is said) and the run was not stopped, the page hears that it ended."""
        for event in self._monitor_sub:
            if (op := chat_op(event)) is not None:
                self.channel.send(op, self.run)
            if isinstance(event, SourceStatus):
                self.status.source = event.state
            elif isinstance(event, ModeChanged):
                self.status.mode = event.mode
            elif isinstance(event, Metrics) and "frame_to_first_delta_ms" in event.stages:
                latency = event.stages["frame_to_first_delta_ms"]
                self.status.latency_ms = latency
                if self.live is not None:
                    self.live.observe_latency(latency / 1000)
            elif isinstance(event, CommentaryFinished) and not event.suppressed:
                self.status.comments += 1
        self._speech.join(10)
        if not self._stopped.is_set():
            self.channel.send({"type": "ended", "error": self.session.error or ""}, self.run)

    def snapshot(self) -> StatusSnapshot:
        hub = self.session.hub
        window = hub.window.snapshot()
        span = window[-1].media_time - window[0].media_time if len(window) > 1 else 0.0
        self.status.capture_fps = (len(window) - 1) / span if span > 0 else 0.0
        self.status.display_fps = self.channel.picture_fps() if self.live is not None else 0.0
        lag = hub.source_lag()
        self.status.source_lag_ms = lag * 1000 if lag is not None else None
        return self.status

    def close(self) -> None:
        """Stop everything this viewer started and wait for it."""
        self._stopped.set()
        self.session.stop()
        if self.live is not None:
            self.live.close()
        for thread in (self._monitor, self._speech):
            if thread.is_alive():
                thread.join(5)


@dataclass
class VoicePrefs:
    """A tab's speech choices from the UI, kept across restarts of its pipeline."""

    engine: str | None
    voice: str | None = None
    muted: bool = False


class SessionManager:
    """All viewers of one app, keyed by Gradio session hash; one shared backend (and speech engines) for all."""

    def __init__(self, settings: Settings, choice: Choice, presets: PresetFile, profiles: dict[str, Profile]) -> None:
        self.settings = settings
        self.choice = choice
        self.presets = presets
        self.profiles = profiles
        self.speech = choose_speech(settings, choice.backend)
        self.guard = UrlGuard.build(settings.share or not is_loopback(settings.host), settings.allow_hosts)
        self.limits = UploadLimits.from_settings(settings)
        self.transcriber, self.stt_reason = find_transcriber(settings.stt_model, choice.backend)
        self._viewers: dict[str, Viewer] = {}
        self._tabs: dict[str, TabChannel] = {}
        self._sync: dict[str, bool] = {}  # per-tab choice of the sync toggle, kept across restarts
        self._voices: dict[str, VoicePrefs] = {}
        self._lock = threading.Lock()

    def voice_prefs(self, key: str) -> VoicePrefs:
        """This tab's speech choices (the run's defaults until the tab changes them)."""
        with self._lock:
            return self._voices.get(key) or VoicePrefs(self.speech.default, self.settings.tts_voice)

    def _keep_prefs(self, key: str) -> VoicePrefs:
        """This tab's speech choices, kept so that changes to them last across restarts."""
        with self._lock:
            return self._voices.setdefault(key, VoicePrefs(self.speech.default, self.settings.tts_voice))

    def speech_options(self, key: str) -> SpeechOptions | None:
        prefs = self.voice_prefs(key)
        if prefs.engine is None or prefs.engine not in self.speech.engines:
            return None
        engine = self.speech.engines[prefs.engine]
        return SpeechOptions(engine, self.settings.speech_pause, self.settings.speech_max_wait, prefs.voice)

    def voices(self, engine: str | None) -> list[str]:
        """Voices to offer for an engine (the model's own voice has none to pick)."""
        chosen = self.speech.engines.get(engine or "")
        return chosen.voices() if chosen is not None else []

    def set_voice(self, key: str, engine: str | None, voice: str | None) -> None:
        """Pick the engine and voice for this tab; a running pipeline switches at its next sentence."""
        if engine is not None and engine not in self.speech.engines:
            allowed = ", ".join(self.speech.engines) or "none available"
            raise OnlookerError(f"unknown speech engine '{engine}'; allowed: {allowed}")
        prefs = self._keep_prefs(key)
        prefs.engine, prefs.voice = engine, voice or None
        viewer = self.get(key)
        if viewer is not None and viewer.session.speaker is not None and engine is not None:
            viewer.session.speaker.set_voice(self.speech.engines[engine], prefs.voice)
            viewer.session.commentator.model_voice = self.speech.engines[engine] is None

    def set_muted(self, key: str, muted: bool) -> None:
        self._keep_prefs(key).muted = muted
        viewer = self.get(key)
        if viewer is not None and viewer.session.speaker is not None:
            viewer.session.speaker.set_muted(muted)

    def tab(self, key: str) -> TabChannel:
        """This tab's channel (made on first use: the page asks for it when it loads)."""
        with self._lock:
            return self._tabs.setdefault(key, TabChannel(key))

    def tab_by_token(self, token: str) -> TabChannel | None:
        with self._lock:
            return next((t for t in self._tabs.values() if secrets.compare_digest(t.token, token)), None)

    def start(self, key: str, request: SourceRequest, profile: str, preset: str) -> Viewer:
        """Start (or restart) this tab's pipeline as a new run of its channel. Bad input raises
        OnlookerError, and the old run is stopped all the same (the page has already left it)."""
        self.stop(key)
        channel = self.tab(key)
        run = channel.begin_run(request.mode, source_label(request))
        chosen = pick(profile, self.profiles, "profile", "profile")
        source = make_source(request, self.guard, self.settings.rtsp_transport, self.limits)
        viewer = Viewer(
            channel, run, self.choice, chosen, self.presets, preset, self.settings, self.speech_options(key)
        )
        viewer.sync = self._sync.get(key, self.settings.live_sync)
        if viewer.session.speaker is not None:
            viewer.session.speaker.set_muted(self.voice_prefs(key).muted)
        with self._lock:
            self._viewers[key] = viewer
        viewer.start(source)
        return viewer

    def get(self, key: str) -> Viewer | None:
        with self._lock:
            return self._viewers.get(key)

    def stop(self, key: str) -> bool:
        """End this tab's pipeline if it has one; True when something was stopped."""
        with self._lock:
            viewer = self._viewers.pop(key, None)
        if viewer is None:
            return False
        viewer.channel.send({"type": "stopped"}, viewer.run)
        viewer.close()
        del viewer  # the last reference: its narration and buffers can go before the trim
        release_memory()
        return True

    def forget(self, key: str) -> None:
        """The tab is gone for good (its channel dropped): stop its pipeline, drop its channel and preferences."""
        self.stop(key)
        with self._lock:
            self._tabs.pop(key, None)
        self._sync.pop(key, None)
        self._voices.pop(key, None)

    def webcam_frame(self, key: str, run: int, jpeg: bytes) -> None:
        """A JPEG from the page's camera, for this tab's current run (a late frame of an old run is dropped)."""
        viewer = self.get(key)
        if viewer is not None and viewer.run == run:
            viewer.push_jpeg(jpeg)

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
            viewer.set_sync(on)

    def instruct(self, key: str, text: str) -> bool:
        viewer = self.get(key)
        if viewer is None or not text.strip():
            return False
        viewer.session.commentator.add_instruction(text)
        return True

    def close_all(self) -> None:
        """Stop every tab's pipeline and release the speech engines (app shutdown)."""
        with self._lock:
            keys = list(self._viewers)
        for key in keys:
            self.stop(key)
        self.speech.close()

    def tab_count(self) -> int:
        with self._lock:
            return len(self._tabs)

    def active_count(self) -> int:
        with self._lock:
            return len(self._viewers)
