"""The CLI's live transcript: commentary to one stream (pipe-friendly), notes to another."""

from __future__ import annotations

from typing import TextIO

from pipeline.consumers.base import Consumer
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
    )
    queue_size = 100_000

    def __init__(self, out: TextIO, notes: TextIO) -> None:
        super().__init__()
        self.out, self.notes = out, notes

    def handle(self, event: Event) -> None:
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
