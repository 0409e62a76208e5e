"""A camera's voice: turns its comments into one paced, ordered audio stream.

The speaker is a bus consumer (``pipeline.consumers.base``) of one camera's events. Each sentence of
a comment is synthesised as soon as it is complete (so speech starts before the comment ends),
resampled to one rate, levelled and queued. Audio of the comment being spoken goes out at once; the
next comment's audio waits until the current one is about to end, then follows after the breathing
pause — unless it went stale meanwhile (the scene cut after its frames, or it waited too long), in
which case it is dropped. Audio leaves in steady chunks (``ChunkBuffer``) to ``on_audio`` (the
player) or, without one, through ``take``/``outputs``; the playback clock is the shared
``SpeechGate``, which also paces the commentator.

Text engines synthesise a whole sentence before it is queued: its length books the playback clock
and its loudness sets one gain; espeak-ng takes ~20 ms for a sentence. A backend with its own voice
(``engine=None``) sends audio chunks on the bus, which are queued as they come.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from pipeline.consumers.base import Consumer
from pipeline.errors import OnlookerError
from pipeline.events import (
    Bus,
    CommentaryAudio,
    CommentaryDelta,
    CommentaryFinished,
    CommentaryStarted,
    ErrorEvent,
    Event,
    SceneCut,
    SpeechEnded,
    SpeechSkipped,
    SpeechStarted,
)
from pipeline.prompts import Voice
from pipeline.speech.audio import (
    OUTPUT_RATE,
    ChunkBuffer,
    LevelKeeper,
    StreamResampler,
    silence,
    to_int16,
    trim_silence,
)
from pipeline.speech.engines import Speech, SpeechEngine
from pipeline.speech.gate import COMMIT_AHEAD, SpeechGate
from pipeline.speech.sentences import SentenceSplitter

log = logging.getLogger(__name__)

POLL = 0.05  # seconds between looks at the playback clock when no event arrives
SENTENCE_PAUSE = 0.2  # between sentences of one comment (the breathing pause is between comments)


@dataclass(frozen=True)
class SpeechOptions:
    """How a session speaks. ``engine=None`` means the backend's own voice (audio on the bus)."""

    engine: SpeechEngine | None
    pause: float = 0.3
    max_wait: float = 4.0
    voice: str | None = None


@dataclass(frozen=True, slots=True)
class AudioOut:
    """A chunk for the player: it starts playing at ``plays_at`` (``time.monotonic`` clock), which is
    ``media_time`` on the source's timeline (as near as the last frame's time tells)."""

    plays_at: float
    media_time: float
    sample_rate: int
    samples: np.ndarray


@dataclass(slots=True)
class _Piece:
    comment_id: int
    samples: np.ndarray  # int16 at OUTPUT_RATE, levelled
    ready: float  # clock time its sentence was complete
    follows_sentence: bool = False  # a later sentence of its comment: a short pause goes before it


@dataclass(slots=True)
class _Comment:
    comment_id: int
    t: float
    frame_wall: float
    trigger_wall: float
    splitter: SentenceSplitter = field(default_factory=SentenceSplitter)
    resampler: StreamResampler = field(default_factory=StreamResampler)
    pieces: int = 0  # queued so far
    first_ready: float | None = None
    gain: float = 1.0
    finished: bool = False
    dropped: str = ""
    started: bool = False
    ends_at: float = 0.0


class Speaker(Consumer):
    """A camera's voice; ``stop`` ends it at once, ``finish`` (or a closed bus) lets it finish speaking.
    Audio goes to ``on_audio`` and any other ``listen``-ers on the speaker's thread (each must return at
    once: the player's clock does not wait), or, with none, to ``take``/``outputs``."""

    name = "speaker"
    wants = (CommentaryStarted, CommentaryDelta, CommentaryAudio, CommentaryFinished, SceneCut)
    tick: ClassVar[float | None] = POLL

    def __init__(
        self,
        bus: Bus,
        gate: SpeechGate,
        options: SpeechOptions,
        profile_voice: Callable[[], Voice],
        media_now: Callable[[], float],
        on_audio: Callable[[AudioOut], None] | None = None,
    ) -> None:
        super().__init__()
        self.gate = gate
        self.engine = options.engine
        self.voice_name = options.voice
        self.max_wait = options.max_wait
        self.profile_voice = profile_voice
        self.media_now = media_now
        self.muted = False
        self.level = LevelKeeper()
        self._comments: dict[int, _Comment] = {}
        self._pending: deque[_Piece] = deque()
        self._current: int | None = None
        self._ends: deque[_Comment] = deque()  # spoken comments whose audio is still playing
        self._last_cut: float | None = None
        self._buffer = ChunkBuffer()
        self._sent_until = 0.0  # clock time the audio already sent ends
        self._out: queue.Queue[AudioOut | None] = queue.Queue()
        self._listeners: list[Callable[[AudioOut], None]] = [on_audio] if on_audio is not None else []
        self._lock = threading.Lock()  # engine/voice/mute changes vs the speaker thread
        self.attach(bus)

    def listen(self, listener: Callable[[AudioOut], None]) -> None:
        """Another receiver of what is spoken (a recorder), added before the speaker starts."""
        self._listeners.append(listener)

    # --- live controls (any thread) ---
    def set_muted(self, muted: bool) -> None:
        """Muted: nothing is synthesised or queued, and the commentator is no longer held back."""
        with self._lock:
            self.muted = muted
            if muted:
                for comment in list(self._comments.values()):
                    self._drop(comment, "muted")
                self._buffer.flush()
                self.gate.silence_now()

    def set_voice(self, engine: SpeechEngine | None, voice: str | None) -> None:
        with self._lock:
            self.engine, self.voice_name = engine, voice

    def voice(self) -> Voice:
        """The profile's voice hints with the voice name this engine should use."""
        hints = self.profile_voice()
        engine = self.engine
        if engine is None:
            return hints
        name = self.voice_name or (hints.engine_voice if hints.engine_voice in engine.voices() else None)
        return hints.model_copy(update={"engine_voice": name or engine.default_voice})

    # --- output ---
    def take(self, timeout: float | None = None) -> AudioOut | None:
        """The next chunk for the player; None on timeout or once the speaker has finished."""
        try:
            chunk = self._out.get(timeout=timeout)
        except queue.Empty:
            return None
        if chunk is None:
            self._out.put(None)  # the end stays visible to every later call
        return chunk

    def outputs(self) -> Iterator[AudioOut]:
        """Every chunk, in order, until the speaker ends."""
        while (chunk := self.take()) is not None:
            yield chunk

    # --- the consumer's hooks, on its thread ---
    def handle(self, event: Event) -> None:
        with self._lock:
            self._handle(event)

    def idle(self) -> None:
        with self._lock:
            self._pump(draining=False)

    def drain(self) -> None:
        """The comments are over (the source ended): say what is left, then finish."""
        with self._lock:
            self._pump(draining=True)

    def on_failure(self) -> None:
        self.gate.silence_now()  # the commentator must not wait for speech that will never come

    def ended(self) -> None:
        self._out.put(None)

    def _handle(self, event: Event) -> None:
        if isinstance(event, CommentaryStarted):
            self._comments[event.comment_id] = _Comment(event.comment_id, event.t, event.frame_wall, event.wall)
            if self.muted:
                self._drop(self._comments[event.comment_id], "muted")
            return
        if isinstance(event, SceneCut):
            self._last_cut = event.t
            return
        comment = self._comments.get(getattr(event, "comment_id", -1))
        if comment is None:  # not ours, dropped, or already settled
            return
        if isinstance(event, CommentaryDelta) and self.engine is not None:
            for sentence in comment.splitter.feed(event.text):
                self._synthesise(comment, sentence)
        elif isinstance(event, CommentaryAudio) and self.engine is None:
            self._queue(comment, comment.resampler.feed(Speech(event.sample_rate, event.samples)), time.monotonic())
        elif isinstance(event, CommentaryFinished):
            self._finish(comment, event)

    def _finish(self, comment: _Comment, event: CommentaryFinished) -> None:
        """The comment is complete: speak its unfinished rest (if it is still part of the final text)."""
        if event.suppressed:
            self._drop(comment, event.suppressed)
            return
        rest = comment.splitter.flush()
        if rest and self.engine is not None and event.text.rstrip().endswith(rest):
            self._synthesise(comment, rest)
        elif self.engine is None:
            self._queue(comment, comment.resampler.finish(), time.monotonic())
        comment.finished = True
        if comment.pieces == 0 and not comment.dropped:
            self._drop(comment, "nothing to say")

    def _synthesise(self, comment: _Comment, sentence: str) -> None:
        engine = self.engine
        if engine is None:
            return
        ready = time.monotonic()
        try:
            chunks = list(engine.stream(sentence, self.voice()))
        except OnlookerError as exc:
            self.publish(ErrorEvent(t=comment.t, message=f"speech failed: {exc}"))
            return
        if not chunks:
            return
        resampler = StreamResampler()
        samples = np.concatenate([*(resampler.feed(c) for c in chunks), resampler.finish()])
        # Engines pad a sentence with silence (espeak-ng: ~0.25 s after it); the pauses are ours to set.
        self._queue(comment, trim_silence(samples), ready, sentence=True)

    def _queue(self, comment: _Comment, samples: np.ndarray, ready: float, sentence: bool = False) -> None:
        """Level float audio with the running gain and queue it; the gain then learns from it."""
        if not len(samples):
            return
        previous = self.level.gain
        learned = self.level.observe(samples)
        if comment.first_ready is None:  # the comment's first audio: its gain holds for all of it
            comment.first_ready = ready
            comment.gain = previous if previous is not None else learned
            self.gate.observe_lead(time.time() - comment.trigger_wall)
        comment.pieces += 1
        samples = to_int16(samples, comment.gain)
        self._pending.append(_Piece(comment.comment_id, samples, comment.first_ready, sentence and comment.pieces > 1))

    def _drop(self, comment: _Comment, reason: str) -> None:
        """Nothing more of this comment will be spoken."""
        comment.dropped = reason
        self._pending = deque(p for p in self._pending if p.comment_id != comment.comment_id)
        self.gate.settle(comment.comment_id)
        if reason not in ("muted", "nothing to say") and comment.pieces:
            self.publish(SpeechSkipped(t=comment.t, comment_id=comment.comment_id, reason=reason))
        self._comments.pop(comment.comment_id, None)

    def _stale(self, comment: _Comment, now: float) -> str:
        if self._last_cut is not None and self._last_cut > comment.t:
            return "stale: the scene changed before it could be spoken"
        if comment.first_ready is not None and now - comment.first_ready > self.max_wait:
            return f"stale: waited more than {self.max_wait:g} s to be spoken"
        return ""

    def _pump(self, draining: bool) -> None:
        """Hand due audio to the player, drop stale comments, and note comments that finished playing."""
        now = time.monotonic()
        while self._pending:
            piece = self._pending[0]
            comment = self._comments[piece.comment_id]
            if piece.comment_id != self._current:
                if not draining and self.gate.until - now > COMMIT_AHEAD:
                    break  # the current comment is still playing: this one waits its turn
                if reason := self._stale(comment, now):
                    self._drop(comment, reason)
                    continue
                self._begin(comment, piece, now)
            elif piece.follows_sentence:
                self._emit(silence(self.gate.pause_needed(SENTENCE_PAUSE)))
            self._pending.popleft()
            self._emit(piece.samples)
            comment.ends_at = self.gate.until
        self._settle_finished()
        if len(self._buffer) and (draining or self.gate.until - len(self._buffer) / OUTPUT_RATE - now <= COMMIT_AHEAD):
            self._send(self._buffer.flush())
        while self._ends and (draining or now >= self._ends[0].ends_at):
            ended = self._ends.popleft()
            self.publish(SpeechEnded(t=self.media_now(), comment_id=ended.comment_id))

    def _begin(self, comment: _Comment, piece: _Piece, now: float) -> None:
        """A new comment starts speaking: breathing pause first, then its audio."""
        self._current = comment.comment_id
        comment.started = True
        self._emit(silence(self.gate.pause_needed()))
        start = self.gate.until if self.gate.until > now else now
        self.publish(
            SpeechStarted(
                t=comment.t,
                comment_id=comment.comment_id,
                at=round(self.media_now() + (start - now), 3),
                wait_ms=round((now - piece.ready) * 1000, 1),
                behind_s=round(time.time() + (start - now) - comment.frame_wall, 3) if comment.frame_wall else 0.0,
            )
        )

    def _settle_finished(self) -> None:
        """Comments whose audio is all booked release the gate and wait for their end to be announced."""
        waiting = {p.comment_id for p in self._pending}
        for comment in list(self._comments.values()):
            if comment.finished and comment.started and comment.comment_id not in waiting:
                self.gate.settle(comment.comment_id)
                self._ends.append(comment)
                del self._comments[comment.comment_id]

    def _emit(self, samples: np.ndarray) -> None:
        """Book audio on the playback clock and pass on the full chunks."""
        if not len(samples):
            return
        self.gate.book(len(samples) / OUTPUT_RATE)
        for chunk in self._buffer.add(samples):
            self._send(chunk)

    def _send(self, chunk: np.ndarray | None) -> None:
        """Pass a chunk on, stamped with where it will play (after what was sent, or now if the player ran dry)."""
        if chunk is None or not len(chunk):
            return
        now = time.monotonic()
        starts = max(self._sent_until, now)
        self._sent_until = starts + len(chunk) / OUTPUT_RATE
        out = AudioOut(starts, self.media_now() + (starts - now), OUTPUT_RATE, chunk)
        if self._listeners:
            for listener in self._listeners:
                listener(out)
        else:
            self._out.put(out)
