"""The CLI's live transcript: commentary to one stream (pipe-friendly), notes to another.

When the reader of the transcript goes away (``| head`` has what it wanted, a closed terminal), the
printer ends and says so in ``output_closed``; the CLI then ends the run instead of commenting to nobody.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from pipeline.consumers.base import Consumer
from pipeline.events import (
    Alert,
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


class TranscriptPrinter(Consumer):
    """Timestamped comments as they stream to ``out``; cuts, modes, source states, opinions and errors to
    ``notes``."""

    name = "transcript"
    wants = (
        CommentaryStarted,
        CommentaryDelta,
        CommentaryFinished,
        SceneCut,
        ModeChanged,
        SourceStatus,
        Opinion,
        ErrorEvent,
        Alert,
    )
    queue_size = 100_000

    def __init__(self, out: TextIO, notes: TextIO) -> None:
        super().__init__()
        self.out, self.notes = out, notes
        self.output_closed = False

    def handle(self, event: Event) -> None:
        if self.output_closed:
            return
        try:
            self._write(event)
        except BrokenPipeError:
            self.output_closed = True
            _silence_broken(self.out, self.notes)

    def _write(self, event: Event) -> None:
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
        elif isinstance(event, Alert):
            self.notes.write(alert_line(event) + "\n")
        elif isinstance(event, ErrorEvent) and not event.fatal:
            self.notes.write(f"· error: {event.message}\n")
        self.out.flush()
        self.notes.flush()


def alert_line(alert: Alert) -> str:
    """One stderr line per alert: when, which rule on which camera, how sure and why."""
    where = alert.camera.name if alert.camera else ""
    mark = "ALERT" if alert.state == "started" else "alert cleared"
    sure = f" ({alert.confidence:.0%}: {alert.reason})" if alert.reason else ""
    return f"! {mark} [{clock(alert.t)}] {alert.rule}: {alert.text}{sure}" + (f" — {where}" if where else "")


def _silence_broken(*streams: TextIO) -> None:
    """Point a closed standard stream at /dev/null, so Python's flush at exit prints no traceback about the
    pipe (the fix the Python docs give for SIGPIPE); a stream that still has its reader keeps it."""
    for stream in streams:
        if stream not in (sys.stdout, sys.stderr):
            continue
        try:
            stream.flush()
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
