"""Headless mode: run one session and print timestamped commentary as it streams.

Commentary goes to stdout (pipe-friendly); notes (backend choice, status, cuts, modes) go to
stderr; ``--events FILE`` gets every bus event as JSON Lines, flushed per line.
"""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from typing import TextIO

from pipeline.backends.base import Backend, create_backend
from pipeline.config import Settings
from pipeline.errors import OnlookerError
from pipeline.events import (
    CommentaryDelta,
    CommentaryFinished,
    CommentaryStarted,
    ErrorEvent,
    Event,
    ModeChanged,
    Opinion,
    SceneCut,
    SourceStatus,
    clock,
)
from pipeline.runconfig import load_run_config
from pipeline.second_opinion import OpinionOptions
from pipeline.session import Session
from pipeline.sources.resolve import open_source
from pipeline.speech.choice import choose_speech
from pipeline.speech.engines import Speech
from pipeline.speech.narration import NarrationTrack
from pipeline.speech.speaker import SpeechOptions


class TranscriptPrinter:
    """Turns bus events into a readable live transcript."""

    def __init__(self, out: TextIO, notes: TextIO) -> None:
        self.out, self.notes = out, notes

    def __call__(self, event: Event) -> None:
        if isinstance(event, CommentaryStarted):
            self.out.write(f"[{clock(event.t)}] ")
        elif isinstance(event, CommentaryDelta):
            self.out.write(event.text)
        elif isinstance(event, CommentaryFinished):
            self.out.write(f"  ({event.suppressed})\n" if event.suppressed else "\n")
        elif isinstance(event, SceneCut):
            self.notes.write(f"· scene cut at {clock(event.t)}\n")
        elif isinstance(event, ModeChanged):
            self.notes.write(f"· {event.mode} ({event.reason}) at {clock(event.t)}\n")
        elif isinstance(event, SourceStatus) and event.state != "failed":
            self.notes.write(f"· source {event.state}{': ' + event.detail if event.detail else ''}\n")
        elif isinstance(event, Opinion):
            self.notes.write(f"{'· ALERT' if event.alert else '·'} {event.task}: {event.text}\n")
        elif isinstance(event, ErrorEvent) and not event.fatal:
            self.notes.write(f"· error: {event.message}\n")
        self.out.flush()
        self.notes.flush()


def speech_options(settings: Settings, backend: Backend, notes: TextIO) -> SpeechOptions | None:
    """The engine ``--tts`` picks, for the ``--audio-out`` narration."""
    chosen = choose_speech(settings, backend)
    for name, engine in chosen.engines.items():
        if engine is not None and name != chosen.default:
            engine.close()  # only the chosen one speaks in a headless run
    notes.write(f"· speech: {chosen.default or 'off'} ({chosen.reason})\n")
    if chosen.default is None:
        raise OnlookerError(f"--audio-out needs a speech engine, and none can run: {chosen.reason}")
    return SpeechOptions(
        chosen.engines[chosen.default], settings.speech_pause, settings.speech_max_wait, settings.tts_voice
    )


def collect_audio(session: Session, narration: NarrationTrack, wait: bool) -> None:
    """Move the speaker's audio onto the narration track (``wait``: until the speaker has finished)."""
    if session.speaker is None:
        return
    if wait:
        session.speaker.join()
    while (chunk := session.speaker.take(0)) is not None:
        narration.add(chunk.media_time, Speech(chunk.sample_rate, chunk.samples))


def run_headless(settings: Settings, out: TextIO = sys.stdout, notes: TextIO = sys.stderr) -> int:
    """Run until the source ends (0), fails (1) or Ctrl-C (0). Errors raise OnlookerError."""
    run = load_run_config(settings)
    if not settings.source:
        raise OnlookerError("--headless needs --source PATH_OR_URL (or ONLOOKER_SOURCE)")
    tuning, profile = run.tuning, run.profile
    if settings.audio_out and settings.tts == "none":
        raise OnlookerError("--audio-out needs a speech engine; leave --tts at auto or pick one")
    source = open_source(settings.source, loop=settings.loop, rtsp_transport=settings.rtsp_transport)
    choice = create_backend(settings)
    notes.write(f"· backend: {choice.backend.description} ({choice.reason})\n")
    speech = speech_options(settings, choice.backend, notes) if settings.audio_out else None
    printer = TranscriptPrinter(out, notes)
    with ExitStack() as stack:
        stack.callback(choice.backend.close)
        if speech is not None and speech.engine is not None:
            stack.callback(speech.engine.close)
        events = stack.enter_context(open(settings.events, "w", encoding="utf-8")) if settings.events else None
        session = Session(
            choice.backend,
            profile,
            tuning,
            settings.instructions,
            speech=speech,
            opinion=OpinionOptions.from_settings(settings),
        )
        stack.callback(session.stop)
        subscription = session.bus.subscribe("cli", maxsize=100_000)
        narration = NarrationTrack()
        if session.speaker is not None and settings.audio_out is not None:
            stack.callback(
                lambda: notes.write(f"· narration: {narration.save(settings.audio_out, session.media_now())}\n")
            )
        session.start(source)
        try:
            for event in subscription:
                printer(event)
                if events is not None:
                    events.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
                    events.flush()
                collect_audio(session, narration, wait=False)
        except KeyboardInterrupt:
            notes.write("· stopped\n")
            return 0
        collect_audio(session, narration, wait=True)
        session.stop()
        if session.error:
            raise OnlookerError(session.error)
    return 0
