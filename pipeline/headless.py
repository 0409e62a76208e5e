"""Headless mode: run one session and print timestamped commentary as it streams.

Commentary goes to stdout (pipe-friendly); notes (backend choice, status, cuts, modes) go to
stderr (``pipeline.consumers.transcript``); ``--events FILE`` gets every bus event as JSON Lines,
flushed per line (``pipeline.consumers.events_file``); ``--audio-out`` saves what was spoken.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TextIO

from pipeline.backends.base import Backend, create_backend
from pipeline.config import Settings
from pipeline.consumers.base import Consumer
from pipeline.consumers.events_file import EventsFile
from pipeline.consumers.transcript import TranscriptPrinter
from pipeline.errors import OnlookerError
from pipeline.recording.export import export_session
from pipeline.recording.folder import default_record_dir
from pipeline.recording.recorder import Recorder
from pipeline.recording.upkeep import tidy
from pipeline.runconfig import load_run_config
from pipeline.session import Session, build_session
from pipeline.signals import Stopped, finishing
from pipeline.sources.resolve import open_source
from pipeline.speech.choice import choose_speech
from pipeline.speech.engines import Speech
from pipeline.speech.narration import NarrationTrack
from pipeline.speech.speaker import SpeechOptions


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


def say_recorded(recorder: Recorder, notes: TextIO) -> None:
    """Where the session was kept (and, if the recording stopped early, why)."""
    if recorder.folder is not None:
        incomplete = f" (incomplete: {recorder.stopped_because})" if recorder.stopped_because else ""
        notes.write(f"· recorded{incomplete}: {recorder.folder}\n")


def export_recording(recorder: Recorder, out: Path, burn: bool, notes: TextIO) -> None:
    """``--export``: the finished recording as a narrated MP4."""
    if recorder.folder is None:
        raise OnlookerError(f"--export: nothing was recorded, so {out} was not made")
    notes.write(f"· exporting {out}…\n")
    result = export_session(recorder.folder, out, burn_subtitles=burn)
    extra = f"; {'; '.join(result.notes)}" if result.notes else ""
    notes.write(f"· exported: {result.path} ({result.duration:.1f} s of video in {result.seconds:.1f} s{extra})\n")


def say_rules(session: Session, backend: Backend, notes: TextIO) -> None:
    """The rules this run watches for, and what the backend will judge when it reads less than the words."""
    for rule, _paused in session.watch.listing() if session.watch else []:
        meaning = backend.rule_meaning(rule.text)
        judged = f" (judged as: {meaning})" if meaning else ""
        notes.write(f"· watching for {rule.name}: {rule.text}{judged}\n")


def run_headless(settings: Settings, out: TextIO = sys.stdout, notes: TextIO = sys.stderr) -> int:
    """Run until the source ends (0), fails (1) or Ctrl-C or SIGTERM (0). Errors raise OnlookerError."""
    run = load_run_config(settings)
    if not settings.source:
        raise OnlookerError("--headless needs --source PATH_OR_URL (or ONLOOKER_SOURCE)")
    tuning, profile = run.tuning, run.profile
    if settings.audio_out and settings.tts == "none":
        raise OnlookerError("--audio-out needs a speech engine; leave --tts at auto or pick one")
    if settings.export and not settings.record:
        raise OnlookerError("--export makes the video from the session's recording; drop --no-record")
    source = open_source(settings.source, loop=settings.loop, rtsp_transport=settings.rtsp_transport)
    if settings.record:
        for line in tidy(settings.record_dir or default_record_dir(), settings.keep_days, settings.max_record_gb):
            notes.write(f"· retention: {line}\n")
    choice = create_backend(settings)
    notes.write(f"· backend: {choice.backend.description} ({choice.reason})\n")
    # Speech is made for what is kept: the narration WAV, or the narrated MP4's audio track.
    speech = speech_options(settings, choice.backend, notes) if settings.audio_out or settings.export else None
    printer = TranscriptPrinter(out, notes)
    consumers: list[Consumer] = [printer]
    if settings.events:
        consumers.append(EventsFile(settings.events))
    narration = NarrationTrack()
    with ExitStack() as stack:
        stack.callback(choice.backend.close)
        if speech is not None and speech.engine is not None:
            stack.callback(speech.engine.close)
        for consumer in consumers:
            stack.callback(consumer.stop)  # the session stops them too; this is for a session never made
        session = build_session(
            settings,
            choice.backend,
            profile,
            tuning,
            speech=speech,
            consumers=consumers,
            on_audio=lambda chunk: narration.add(chunk.media_time, Speech(chunk.sample_rate, chunk.samples)),
            preset=settings.preset or run.presets.default,
        )
        say_rules(session, choice.backend, notes)
        recorder = session.consumer(Recorder)
        if recorder is not None:  # said last, once every file is finished
            if settings.export is not None:
                stack.callback(export_recording, recorder, settings.export, settings.export_burn_subtitles, notes)
            stack.callback(say_recorded, recorder, notes)
        if speech is not None and settings.audio_out is not None:
            audio_out = settings.audio_out
            stack.callback(lambda: notes.write(f"· narration: {narration.save(audio_out, session.media_now())}\n"))
        stack.callback(session.stop)  # runs before the narration is saved: nothing is added to it after
        session.start(source)
        try:
            while not session.join(0.5):  # the bus closes when the source ends; Ctrl-C stops at once
                if printer.output_closed or printer.failed:  # a headless run is for its transcript
                    break
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM through ``pipeline.signals``: the stack finishes up
            notes.write(f"· stopped ({stop.signame})\n" if isinstance(stop, Stopped) else "· stopped\n")
            return 0
        finishing()
        session.stop()
        if printer.output_closed:
            return 0  # `| head` read what it wanted: end quietly, like any Unix filter
        if printer.failed:
            raise OnlookerError(printer.failed)
        if session.error:
            raise OnlookerError(session.error)
    return 0
