"""One viewer's pipeline: source → hub → commentator → bus, started and torn down together."""

from __future__ import annotations

from pipeline.backends.base import Backend
from pipeline.commentator import Commentator
from pipeline.config import Tuning
from pipeline.events import ErrorEvent, EventBus, SourceStatus
from pipeline.frames import Frame
from pipeline.hub import FrameHub
from pipeline.prompts import Profile
from pipeline.second_opinion import OpinionOptions, SecondOpinion
from pipeline.sources.base import Source
from pipeline.sources.watchdog import STALL_AFTER, StallWatchdog
from pipeline.speech.gate import SpeechGate
from pipeline.speech.speaker import Speaker, SpeechOptions


class Session:
    """Owns every thread it starts; ``stop`` ends them all. The backend is shared, not owned."""

    def __init__(
        self,
        backend: Backend,
        profile: Profile,
        tuning: Tuning,
        instructions: str = "",
        stall_after: float = STALL_AFTER,
        speech: SpeechOptions | None = None,
        opinion: OpinionOptions | None = None,
    ) -> None:
        self.stall_after = stall_after
        self.watchdog: StallWatchdog | None = None
        self.bus = EventBus()
        self.hub = FrameHub(self.bus, tuning)
        self.gate = SpeechGate(speech.pause) if speech else None
        self.commentator = Commentator(
            self.hub,
            backend,
            self.bus,
            profile,
            tuning,
            instructions,
            on_exit=self._ended,
            gate=self.gate,
            model_voice=speech is not None and speech.engine is None,
        )
        self.speaker = (
            Speaker(self.bus, self.gate, speech, lambda: self.commentator.profile.voice, self.media_now, self.bus.close)
            if speech and self.gate
            else None
        )
        self.second_opinion = SecondOpinion(self.bus, opinion) if opinion else None
        self.source: Source | None = None

    def start(self, source: Source) -> None:
        """Start reading ``source`` and commenting on it (a Session runs one source, once)."""
        if self.source is not None:
            raise RuntimeError("a session runs one source; create a new Session for another")
        self.source = source
        self.watchdog = StallWatchdog(source, self.stall_after)
        if self.speaker is not None:
            self.speaker.start()
        if self.second_opinion is not None:
            self.second_opinion.start()
        self.commentator.start()
        self.watchdog.start()
        source.start(self._on_frame, self._on_status)

    def _on_frame(self, frame: Frame) -> None:
        self.hub.push(frame)
        if self.watchdog is not None:
            self.watchdog.frame_arrived()

    def media_now(self) -> float:
        """Media time of the newest frame (0 before the first)."""
        return self.hub.latest.media_time if self.hub.latest else 0.0

    def _on_status(self, state: str, detail: str) -> None:
        source = self.source
        name = source.display_name if source else ""
        t = self.media_now()
        self.bus.publish(SourceStatus(t=t, state=state, detail=detail, source=name))
        if state in ("stalled", "reconnecting"):
            self.hub.mark_gap()
        if state == "failed":
            self.bus.publish(ErrorEvent(t=t, message=detail, fatal=True))
        if state in ("ended", "failed"):
            self.hub.mark_ended()

    def _ended(self) -> None:
        """The commentator finished (end of source, fatal error or stop): the speaker says what is
        left, then consumers drain and stop."""
        if self.speaker is not None and self.speaker.running:
            self.speaker.finish()  # it closes the bus when it is done
        else:
            self.bus.close()

    @property
    def error(self) -> str | None:
        """Why the session failed, or None if it ended normally (or is still running)."""
        if self.source is not None and self.source.error:
            return self.source.error
        return self.commentator.failed

    def stop(self, timeout: float = 10.0) -> None:
        """Stop generation, the source and the bus; joins every thread. Safe to call twice."""
        self.commentator.stop(timeout)
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.source is not None:
            self.source.stop(timeout)
        self.bus.close()
        if self.speaker is not None:
            self.speaker.stop(timeout)
        if self.second_opinion is not None:
            self.second_opinion.stop(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the commentary loop has ended; True when it has."""
        return self.commentator.join(timeout)
