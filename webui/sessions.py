"""Per-tab pipelines: each browser tab (Gradio session hash) owns one Viewer; the model is shared.

A Viewer bundles a pipeline Session with its live view and the tab's consumers (``webui.chat.ChatFeed``,
``webui.status.StatusFeed``) and the speaker's audio, all of which write to the tab's channel
(``webui.channel``: one WebSocket carries picture, speech, chat and status). Each Start is a new run of
the tab's channel, so the page drops whatever the old run still sends. Starting again in the same tab
replaces the old Viewer cleanly; Stop, closing the tab (its channel drops) and shutting the app down
all end in ``Viewer.close``, which joins every thread. A tab's watch rules (``webui.rules``) outlive its
runs: each new session is built with them.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.backends.base import Choice
from pipeline.config import PresetFile, Settings, pick
from pipeline.errors import OnlookerError
from pipeline.prompts import Profile
from pipeline.recording.recorder import Recorder
from pipeline.session import build_session
from pipeline.sources.base import Source
from pipeline.sources.guard import UrlGuard
from pipeline.sources.webcam import PushSource
from pipeline.space import is_exposed
from pipeline.speech.choice import choose_speech
from pipeline.speech.engines import Speech
from pipeline.speech.narration import NarrationTrack
from pipeline.speech.speaker import AudioOut, SpeechOptions
from pipeline.speech.transcribe import find_transcriber
from webui.channel import TabChannel
from webui.chat import ChatFeed
from webui.live import LiveView
from webui.memory import release_memory
from webui.rules import TabRules
from webui.sources import SourceRequest, UploadLimits, make_source, source_label
from webui.status import StatusFeed, StatusSnapshot

log = logging.getLogger(__name__)

NARRATION_LIMIT = 3600.0  # seconds of media timeline a tab's saved narration covers (~170 MB at most)


class Viewer:
    """One tab's running pipeline: session, live view, feeds and speech, all sending to one run of the
    tab's channel."""

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
        on_alert: Callable[[], None] = lambda: None,
    ):
        self.channel = channel
        self.run = run
        self.profile = profile
        self.live: LiveView | None = None
        self.sync = settings.live_sync
        self.status = StatusSnapshot()
        self.narration = NarrationTrack(max_seconds=NARRATION_LIMIT)  # what the player was sent, to save
        self.session = build_session(
            settings,
            choice.backend,
            profile,
            pick(preset_name, preset.presets, "preset", "preset"),
            speech=speech,
            consumers=[
                ChatFeed(channel, run, lambda: self.session.error),
                StatusFeed(self.status, self._observe_latency, on_alert),
            ],
            on_audio=self._play,
            preset=preset_name,
        )
        self.source: Source | None = None

    def start(self, source: Source) -> None:
        self.source = source
        if not isinstance(source, PushSource):  # the page shows its own camera preview, with no delay
            self.live = LiveView(self.session.hub, self._offer_picture, sync=self.sync)
        self.session.start(source)

    def _observe_latency(self, seconds: float) -> None:
        if self.live is not None:
            self.live.observe_latency(seconds)

    def _play(self, chunk: AudioOut) -> None:
        """A paced chunk from the speaker → the page (stamped with when it plays) and the saved narration."""
        self.narration.add(chunk.media_time, Speech(chunk.sample_rate, chunk.samples))
        plays_at = time.time() + (chunk.plays_at - time.monotonic())
        self.channel.send_audio(self.run, plays_at, chunk.media_time, chunk.sample_rate, chunk.samples)

    def _offer_picture(self, wall_time: float, jpeg: bytes) -> None:
        self.channel.offer_picture(self.run, wall_time, jpeg)

    def set_sync(self, on: bool) -> None:
        self.sync = on
        if self.live is not None:
            self.live.sync = on

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
        self.session.stop()
        if self.live is not None:
            self.live.close()


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
        self.guard = UrlGuard.build(is_exposed(settings), settings.allow_hosts)
        self.limits = UploadLimits.from_settings(settings)
        self.transcriber, self.stt_reason = find_transcriber(settings.stt_model, choice.backend)
        self._viewers: dict[str, Viewer] = {}
        self._tabs: dict[str, TabChannel] = {}
        self._sync: dict[str, bool] = {}  # per-tab choice of the sync toggle, kept across restarts
        self._voices: dict[str, VoicePrefs] = {}
        self._logins: dict[str, str] = {}  # tab → the login it came with (--auth), whose sessions it records
        self._rules: dict[str, TabRules] = {}  # each tab's watch rules, kept across its runs
        self._starting: set[str] = set()  # tabs between a Start's claim on the caps and their running viewer
        # With several logins one of them may hold half the app (rounded up), so no visitor can take all of it.
        cap = settings.max_sessions
        self.login_cap = -(-cap // 2) if len(settings.logins()) > 1 else cap
        self._closed = threading.Event()
        self.leaving = threading.Event()  # set once the app stops: tab channels no longer wait for a reconnect
        self._lock = threading.Lock()

    def note_login(self, key: str, username: str | None) -> None:
        """The login a tab's requests come with (``--auth``): its recordings are that visitor's."""
        if username:
            with self._lock:
                self._logins[key] = username

    def login(self, key: str) -> str | None:
        with self._lock:
            return self._logins.get(key)

    def _default_prefs(self) -> VoicePrefs:
        """A tab's speech choices before it changes them: the run's ``--tts`` pick, ``--tts-voice`` and ``--mute``."""
        return VoicePrefs(self.speech.default, self.settings.tts_voice, self.settings.mute)

    def voice_prefs(self, key: str) -> VoicePrefs:
        """This tab's speech choices (the run's defaults until the tab changes them)."""
        with self._lock:
            return self._voices.get(key) or self._default_prefs()

    def _keep_prefs(self, key: str) -> VoicePrefs:
        """This tab's speech choices, kept so that changes to them last across restarts."""
        with self._lock:
            return self._voices.setdefault(key, self._default_prefs())

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
        """Start (or restart) this tab's pipeline as a new run of its channel. Bad input, or a Start past
        the caps (``--max-sessions``), raises OnlookerError, and the old run is stopped all the same (the page
        has already left it)."""
        self.stop(key)
        channel = self.tab(key)
        run = channel.begin_run(request.mode, source_label(request))
        self._claim(key)
        try:
            chosen = pick(profile, self.profiles, "profile", "profile")
            source = make_source(request, self.guard, self.settings.rtsp_transport, self.limits)
            rules = self.rules(key)
            settings, speech = rules.settings_for(self.settings, chosen), self.speech_options(key)
            shown = functools.partial(self.show_rules, key)  # a rule's alert went on or off: the box says so
            viewer = Viewer(channel, run, self.choice, chosen, self.presets, preset, settings, speech, shown)
            if viewer.session.watch is not None:
                rules.hand_over(viewer.session.watch)
            if (recorder := viewer.session.consumer(Recorder)) is not None:
                recorder.owner = self.login(key)
            viewer.sync = self._sync.get(key, self.settings.live_sync)
            if viewer.session.speaker is not None:
                viewer.session.speaker.set_muted(self.voice_prefs(key).muted)
            with self._lock:
                self._viewers[key] = viewer
        finally:
            with self._lock:
                self._starting.discard(key)
        viewer.start(source)
        return viewer

    def _claim(self, key: str) -> None:
        """Count this tab's Start against the caps until its viewer runs or the Start fails, or refuse it: the
        app runs ``--max-sessions`` at most, and one login ``login_cap``. Checked and counted under one lock, so
        Starts at the same moment cannot pass the cap together. A tab replacing its own session never counts
        twice (it was stopped first). Without a login, visitors cannot be told apart: only the app's cap holds."""
        limit = self.settings.max_sessions
        with self._lock:
            login = self._logins.get(key)
            owners = [self._logins.get(k) for k in (*self._viewers, *self._starting) if k != key]
            if len(owners) >= limit:
                raise OnlookerError(
                    f"This app is already running {len(owners)} sessions, its limit (--max-sessions {limit}): "
                    "stop one, or try again later."
                )
            mine = owners.count(login) if login is not None else 0
            if mine >= self.login_cap:
                raise OnlookerError(
                    f"Your login already runs {mine} sessions, the most one login may run here (half of "
                    f"--max-sessions {limit}): stop one of them, or try again later."
                )
            self._starting.add(key)

    def rules(self, key: str) -> TabRules:
        """This tab's watch rules (made on first use, from ``--watch``)."""
        with self._lock:
            rules = self._rules.get(key)
        if rules is None:  # judged outside the lock: a backend may take a moment
            rules = TabRules(self.settings, self.choice.backend.rule_problem)
            with self._lock:
                rules = self._rules.setdefault(key, rules)
        return rules

    def show_rules(self, key: str) -> None:
        """The tab's rules box, as it is now (with the running session's alerts), to its page."""
        viewer = self.get(key)
        alerts_on = set(viewer.status.alerts_on) if viewer is not None else set()
        self.tab(key).send({"type": "rules", "html": self.rules(key).html(alerts_on)})

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
            self._logins.pop(key, None)
        self._sync.pop(key, None)
        self._voices.pop(key, None)
        self._rules.pop(key, None)

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

    def reap(self, now: float | None = None) -> list[str]:
        """Forget the tabs no page opened (``TabChannel.unopened``), and their sessions: a client that calls
        Start through the API without a page would otherwise hold a session, and its threads, until the app
        stops. (A tab whose page went away goes after ``RECONNECT_GRACE``: ``webui.channel.serve_tab``.)"""
        now = time.monotonic() if now is None else now
        with self._lock:
            gone = [key for key, tab in self._tabs.items() if tab.unopened(now)]
        for key in gone:
            log.info("tab %s: no page opened its channel; its session is stopped", key[:8])
            self.forget(key)
        return gone

    def reap_forever(self, every: float = 1.0) -> None:
        """The app's reaper thread: ``reap`` every ``every`` seconds until ``close_all``."""
        while not self._closed.wait(every):
            self.reap()

    def stop_all(self) -> None:
        """Stop every tab's pipeline as its Stop button does (the recordings finished): on SIGTERM, while the
        server still runs, so each page hears that its session stopped."""
        self.leaving.set()
        with self._lock:
            keys = list(self._viewers)
        for key in keys:
            self.stop(key)

    def close_all(self) -> None:
        """Stop every tab's pipeline and release the speech engines (app shutdown)."""
        self._closed.set()
        self.stop_all()
        self.speech.close()

    def tab_count(self) -> int:
        with self._lock:
            return len(self._tabs)

    def active_count(self) -> int:
        with self._lock:
            return len(self._viewers)
