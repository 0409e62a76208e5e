"""The monitor loop: decides when to speak, asks the backend, and publishes what it says.

Modes: IDLE while the picture is still (a heartbeat comment now and then, or silence), ACTIVE
while things move (comments every ``active_interval``, sooner the more happens: scene-weighted
density). A hard cut triggers a comment about the new scene right away. Recent comments go
back into the prompt so the model does not repeat itself, and empty, "..." and near-duplicate
comments are suppressed.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from difflib import SequenceMatcher

from pipeline.backends.base import Backend, CommentRequest
from pipeline.config import Tuning
from pipeline.errors import BackendError
from pipeline.events import (
    Bus,
    CommentaryAudio,
    CommentaryDelta,
    CommentaryFinished,
    CommentaryStarted,
    ErrorEvent,
    Metrics,
    ModeChanged,
    Trigger,
)
from pipeline.frames import Frame
from pipeline.hub import FrameHub
from pipeline.hub_worker import HubWorker
from pipeline.prompts import Profile, build_prompt
from pipeline.scheduler import PRIORITY, Scheduler, Ticket, scheduler_for
from pipeline.speech.engines import Speech
from pipeline.speech.gate import SpeechGate
from pipeline.speech.sentences import end_at_sentence

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_FAILURES = 3
MAX_INSTRUCTIONS = 3
_WORD = re.compile(r"\w", re.UNICODE)


def _normalise(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def suppression_reason(text: str, recent: list[str], similarity: float) -> str:
    """Why a finished comment must not be shown or spoken ('' = keep it)."""
    stripped = text.strip()
    if not stripped:
        return "empty"
    if not _WORD.search(stripped):
        return "nothing_new"  # "...", "…", "-" and friends: the model's way of staying quiet
    normal = _normalise(stripped)
    for earlier in recent:
        other = _normalise(earlier)
        if normal == other or SequenceMatcher(None, normal, other).ratio() >= similarity:
            return "duplicate"
    return ""


class Commentator(HubWorker):
    """Owns the commentary thread of one session; ``stop`` cancels generation and joins it."""

    thread_name = "commentator"
    crash_words = "commentator crashed"
    crash_fatal = True  # never die silently: the consumer must hear about it

    def __init__(
        self,
        hub: FrameHub,
        backend: Backend,
        bus: Bus,
        profile: Profile,
        tuning: Tuning,
        instructions: str = "",
        on_exit: Callable[[], None] | None = None,
        gate: SpeechGate | None = None,
        model_voice: bool = False,
        scheduler: Scheduler | None = None,
    ) -> None:
        super().__init__(hub, bus)
        self.backend = backend
        self.profile = profile
        self.tuning = tuning
        self.mode = "idle"
        self.comments = 0
        self._recent: deque[str] = deque(maxlen=max(tuning.context_comments, 1))
        self._instructions: deque[str] = deque([instructions] if instructions else [], maxlen=MAX_INSTRUCTIONS)
        self._lock = threading.Lock()
        self._last_comment: float | None = None
        self._last_activity: float | None = None
        self._failures = 0
        self._outage = 0.0  # seconds the feed was gone before the pending 'feed_back' comment
        self._on_exit = on_exit or (lambda: None)
        self.gate = gate  # when speech is on: no new comment while the last one is still to be spoken
        self.model_voice = model_voice  # the backend's own voice goes on the bus as audio events
        self.stream_id = uuid.uuid4().hex  # unique for the process's life: backends key session state on it
        self.scheduler = scheduler or scheduler_for(backend)  # one queue for everyone who shares the backend

    # --- live controls (any thread) ---
    def set_profile(self, profile: Profile) -> None:
        with self._lock:
            self.profile = profile

    def set_tuning(self, tuning: Tuning) -> None:
        with self._lock:
            self.tuning = tuning
            self._recent = deque(self._recent, maxlen=max(tuning.context_comments, 1))
        self.hub.set_tuning(tuning)

    def add_instruction(self, text: str) -> None:
        """A live viewer instruction ("focus on the goalkeeper"), merged into the next prompts."""
        text = " ".join(text.split())
        if text:
            with self._lock:
                self._instructions.append(text)

    @property
    def instructions(self) -> list[str]:
        """The live instructions currently merged into prompts, oldest first."""
        with self._lock:
            return list(self._instructions)

    # --- thread ownership (start, stop, running: HubWorker) ---
    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # --- the loop ---
    def _loop(self) -> None:
        while not self._stop.is_set():
            self.hub.wait(0.1)
            frame = self.hub.latest
            if frame is None:
                if self.hub.ended:
                    return
                continue
            now = frame.media_time
            self._update_mode(now)
            trigger = self._due(now)
            if trigger:
                self._take_turn(trigger)
            elif self.hub.ended:
                return

    def _finish(self) -> None:
        self._on_exit()

    def _update_mode(self, now: float) -> None:
        tuning = self.tuning
        score = self.hub.score
        if score.motion >= tuning.motion_threshold or self.hub.peek_cut() is not None:
            self._last_activity = now
        active = self._last_activity is not None and now - self._last_activity < tuning.idle_after
        mode = "active" if active else "idle"
        if mode != self.mode:
            self.mode = mode
            reason = "motion" if active else f"still for {tuning.idle_after:g}s"
            self.bus.publish(ModeChanged(t=now, mode=mode, reason=reason))

    def _due(self, now: float) -> Trigger | None:
        """The trigger for a comment now ('start', 'feed_back', 'scene_cut', 'active', 'heartbeat'), or None.

        Nothing while the source is stalled or reconnecting: the picture is frozen, not still."""
        tuning = self.tuning
        if self._last_comment is None:
            self.hub.take_cut()
            return "start"
        since = now - self._last_comment
        if self.hub.in_gap or since < tuning.min_interval or (self.gate is not None and not self.gate.is_open()):
            return None  # a cut waits in the hub, so the comment after the gate opens is about the new scene
        if (outage := self.hub.take_return()) is not None:
            self._outage = outage
            return "feed_back"
        if self.hub.peek_cut() is not None:
            self.hub.take_cut()
            if tuning.comment_on_cut:
                return "scene_cut"
        if self.mode == "active":
            interval = max(tuning.min_interval, tuning.active_interval / (1.0 + tuning.density * self.hub.score.weight))
            return "active" if since >= interval else None
        if tuning.heartbeat > 0 and since >= tuning.heartbeat:
            return "heartbeat"
        return None

    def _take_turn(self, trigger: Trigger) -> None:
        """Wait for the backend's scheduler to give this camera a turn, then comment on the newest frames.

        While it waits, a scene cut makes the request a cut (more urgent); stopping withdraws it."""
        ticket = self.scheduler.ask(self.stream_id, trigger)
        while not ticket.wait(0.1):
            if self._stop.is_set():
                self.scheduler.withdraw(ticket)
                return
            if (latest := self.hub.latest) is not None:
                self._update_mode(latest.media_time)
            if PRIORITY[ticket.trigger] > PRIORITY["scene_cut"] and self.hub.peek_cut() is not None:
                self.hub.take_cut()
                if self.tuning.comment_on_cut:
                    self.scheduler.ask(self.stream_id, "scene_cut")
        first_token: float | None = None
        try:
            newest = self.hub.latest
            if newest is not None and not self._stop.is_set():
                first_token = self._comment(ticket, newest)
        finally:
            self.scheduler.finish(ticket, first_token)

    def _comment(self, ticket: Ticket, newest: Frame) -> float | None:
        """One comment on the frames up to ``newest``; returns the model's time to first token (s)."""
        trigger = ticket.trigger
        triggered = time.time()
        with self._lock:
            profile, tuning = self.profile, self.tuning
            recent = list(self._recent)[-tuning.context_comments :] if tuning.context_comments else []
            instructions = list(self._instructions)
        self.comments += 1
        comment_id = self.comments
        self._last_comment = newest.media_time
        stages: dict[str, float] = {"queue_wait_ms": ticket.queue_wait * 1000}

        mark = time.perf_counter()
        limit = min(tuning.max_frames, self.backend.capabilities.max_frames)
        frames = self.hub.window.snapshot(tuning.stride, limit=limit, since=self.hub.last_cut) or [newest]
        stages["window_ms"] = (time.perf_counter() - mark) * 1000
        mark = time.perf_counter()
        prompt = build_prompt(
            profile,
            frame_count=len(frames),
            span_seconds=frames[-1].media_time - frames[0].media_time,
            recent=recent,
            instructions=instructions,
            trigger=trigger,
            outage=self._outage if trigger == "feed_back" else 0.0,
        )
        stages["prompt_ms"] = (time.perf_counter() - mark) * 1000
        self._cancel.clear()
        t = frames[-1].media_time
        request = CommentRequest(
            frames=frames,
            prompt=prompt,
            max_tokens=min(tuning.max_tokens, profile.max_tokens),
            temperature=profile.temperature,
            trigger=trigger,
            cancel=self._cancel,
            on_audio=self._audio_sink(comment_id, t) if self.model_voice else None,
            stream_id=self.stream_id,
            reference_audio=profile.voice.reference_audio,
            stop=list(profile.stop),
        )
        if self.gate is not None:
            self.gate.expect(comment_id)
        self.bus.publish(
            CommentaryStarted(
                t=t, comment_id=comment_id, trigger=trigger, frames=len(frames), frame_wall=frames[-1].wall_time
            )
        )
        text, first_delta, error = self._stream(request, comment_id, t)
        text = end_at_sentence(text)
        if error:
            reason = error
        elif request.cancel.is_set():
            reason = "cancelled"
        else:
            reason = suppression_reason(text, recent, tuning.duplicate_similarity)
        self.bus.publish(CommentaryFinished(t=t, comment_id=comment_id, text=text.strip(), suppressed=reason))
        if not reason:
            with self._lock:
                self._recent.append(text.strip())
        done = time.time()
        model_ttft = request.timings.get("model_first_token", 0.0) - request.timings.get("model_start", 0.0)
        stages["frame_age_ms"] = (triggered - newest.wall_time) * 1000
        stages["total_ms"] = (done - triggered) * 1000
        if first_delta is not None:
            stages["first_delta_ms"] = (first_delta - triggered) * 1000
            stages["frame_to_first_delta_ms"] = (first_delta - newest.wall_time) * 1000
            if model_ttft > 0:
                stages["model_ttft_ms"] = model_ttft * 1000
                stages["overhead_ms"] = stages["first_delta_ms"] - stages["model_ttft_ms"]
        stages["frames"] = float(len(frames))
        stages["scene_score_ms"] = 1000 * self.hub.scoring_seconds / max(self.hub.scored, 1)
        stages["bus_dropped"] = float(sum(self.bus.dropped().values()))
        stages["bus_backlog"] = float(self.bus.backlog())
        if (switch := self.scheduler.cost.seconds) is not None:
            stages["switch_cost_ms"] = switch * 1000
        self.bus.publish(Metrics(t=t, comment_id=comment_id, stages={k: round(v, 2) for k, v in stages.items()}))
        return model_ttft if model_ttft > 0 else None

    def _audio_sink(self, comment_id: int, t: float) -> Callable[[Speech], None]:
        def publish(speech: Speech) -> None:
            self.bus.publish(
                CommentaryAudio(t=t, comment_id=comment_id, sample_rate=speech.sample_rate, samples=speech.samples)
            )

        return publish

    def _stream(self, request: CommentRequest, comment_id: int, t: float) -> tuple[str, float | None, str]:
        """Run the backend: (text, wall time of the first shown delta, "" or "error" when it failed).

        Deltas are held back until real words appear, so a "..." answer never flashes up."""
        text, first_delta = "", None
        try:
            for delta in self.backend.stream(request):
                if self._stop.is_set():
                    request.cancel.set()
                    break
                if not delta:
                    continue
                text += delta
                if first_delta is None and _WORD.search(text):
                    first_delta = time.time()
                    self.bus.publish(CommentaryDelta(t=t, comment_id=comment_id, text=text.lstrip()))
                elif first_delta is not None:
                    self.bus.publish(CommentaryDelta(t=t, comment_id=comment_id, text=delta))
        except BackendError as exc:
            if exc.transient:  # the engine is away for now: say so, try again at the next beat
                self.bus.publish(ErrorEvent(t=t, message=str(exc), fatal=False))
                return text, first_delta, "error"
            self._failures += 1
            fatal = self._failures >= MAX_CONSECUTIVE_FAILURES
            message = str(exc) + (" (giving up after repeated failures)" if fatal else "")
            self.bus.publish(ErrorEvent(t=t, message=message, fatal=fatal))
            if fatal:
                self.failed = message
                self._stop.set()
            return text, first_delta, "error"
        self._failures = 0
        return text, first_delta, ""
