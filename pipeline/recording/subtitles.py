"""Subtitles from kept comments: cues timed on the media timeline, wrapped for reading, as SRT and WebVTT.

A spoken comment's cue runs from when its speech started to when it ended; a comment that was not
spoken (no speech engine, or its speech was dropped as stale) is shown from the time of its frames
for as long as it takes to read, and never past the next comment: a camera monitor that comments
every 30 s should not keep an old sentence on screen for 30 s. Cues never overlap and go out in time
order; a comment too long for two lines is split into several cues that share its time by length.
Files are appended cue by cue and flushed, so a crash loses at most the cue being timed.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pipeline import events as ev

LINE_CHARS = 42  # the broadcast norm for one subtitle line
MAX_LINES = 2
READ_CHARS_PER_S = 15.0  # comfortable reading speed for adults
MIN_CUE_S = 1.0  # shortest cue anyone can read
MAX_UNSPOKEN_S = 7.0  # longest an unspoken comment stays up


@dataclass(frozen=True, slots=True)
class Cue:
    """One subtitle: start and end in media seconds, lines already wrapped."""

    start: float
    end: float
    lines: tuple[str, ...]


def reading_time(text: str) -> float:
    """Seconds an unspoken comment stays up: its reading time, within [MIN_CUE_S, MAX_UNSPOKEN_S]."""
    return min(max(len(text) / READ_CHARS_PER_S + 0.5, MIN_CUE_S), MAX_UNSPOKEN_S)


def split_for_screen(text: str) -> list[tuple[str, ...]]:
    """The text in screens of at most two lines of at most ``LINE_CHARS`` (a longer word stands alone)."""
    lines = textwrap.wrap(" ".join(text.split()), LINE_CHARS, break_long_words=False, break_on_hyphens=False)
    return [tuple(lines[i : i + MAX_LINES]) for i in range(0, len(lines), MAX_LINES)]


def cues_for(text: str, start: float, end: float) -> list[Cue]:
    """A comment's cues between ``start`` and ``end``: one per screen, each lasting by its share of the text."""
    screens = split_for_screen(text)
    if not screens:
        return []
    sizes = [sum(len(line) for line in screen) for screen in screens]
    total, at, cues = sum(sizes), start, []
    for screen, size in zip(screens, sizes, strict=True):
        until = at + (end - start) * size / total
        cues.append(Cue(round(at, 3), round(until, 3), screen))
        at = until
    return cues


def srt_time(seconds: float) -> str:
    ms = round(max(seconds, 0.0) * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{ms:03d}"


def vtt_time(seconds: float) -> str:
    return srt_time(seconds).replace(",", ".")


def vtt_text(line: str) -> str:
    """WebVTT cue text escapes ``&``, ``<`` and ``>``."""
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def srt_text(line: str) -> str:
    """SRT has no escapes and players read ``<…>`` as formatting tags: angle brackets become ‹ and ›."""
    return line.replace("<", "\u2039").replace(">", "\u203a")


class SubtitleFiles:
    """Appends cues to an SRT and/or a WebVTT file as they are timed; either path may be None."""

    def __init__(self, srt: Path | None, vtt: Path | None) -> None:
        self._srt: TextIO | None = open(srt, "w", encoding="utf-8") if srt else None  # noqa: SIM115  # closed in close()
        self._vtt: TextIO | None = open(vtt, "w", encoding="utf-8") if vtt else None  # noqa: SIM115
        if self._vtt is not None:
            self._vtt.write("WEBVTT\n\n")
            self._vtt.flush()
        self.count = 0

    def write(self, cue: Cue) -> None:
        self.count += 1
        if self._srt is not None:
            text = "\n".join(srt_text(line) for line in cue.lines)
            self._srt.write(f"{self.count}\n{srt_time(cue.start)} --> {srt_time(cue.end)}\n{text}")
            self._srt.write("\n\n")
            self._srt.flush()
        if self._vtt is not None:
            text = "\n".join(vtt_text(line) for line in cue.lines)
            self._vtt.write(f"{vtt_time(cue.start)} --> {vtt_time(cue.end)}\n{text}\n\n")
            self._vtt.flush()

    def close(self) -> None:
        for file in (self._srt, self._vtt):
            if file is not None:
                file.close()


@dataclass
class _Comment:
    comment_id: int
    shown_at: float  # the media time of its frames
    text: str = ""
    kept: bool | None = None  # None: not finished yet
    spoken_from: float | None = None
    spoken_to: float | None = None
    unspoken: bool = False  # its speech was skipped, or the camera does not speak


class CueTimer:
    """Times one camera's kept comments from its events and hands finished cues to ``out`` in order.

    ``speaks``: whether the camera has a voice; then a kept comment waits for its speech to start and
    end (or to be skipped) before its cue is known."""

    def __init__(self, out: SubtitleFiles, speaks: bool) -> None:
        self.out = out
        self.speaks = speaks
        self._open: dict[int, _Comment] = {}
        self._order: list[int] = []  # comment ids in the order they started
        self._last_end = 0.0
        self._now = 0.0  # the newest media time seen

    def advance(self, now: float) -> None:
        """Media time has reached ``now``: an unspoken comment read to its end can be written."""
        if now > self._now:
            self._now = now
            self._settle()

    def started(self, comment_id: int, t: float) -> None:
        self._open[comment_id] = _Comment(comment_id, t, unspoken=not self.speaks)
        self._order.append(comment_id)

    def finished(self, comment_id: int, text: str, kept: bool) -> None:
        if comment := self._open.get(comment_id):
            comment.text, comment.kept = text, kept and bool(text.strip())
            self._settle()

    def speech_started(self, comment_id: int, at: float) -> None:
        if comment := self._open.get(comment_id):
            comment.spoken_from = at

    def speech_ended(self, comment_id: int, t: float) -> None:
        if comment := self._open.get(comment_id):
            comment.spoken_to = t
            self._settle()

    def speech_skipped(self, comment_id: int) -> None:
        if comment := self._open.get(comment_id):
            comment.unspoken = True
            self._settle()

    def close(self) -> None:
        """The session ended: time what is left (speech that never ended counts as unspoken)."""
        for comment in self._open.values():
            if comment.kept is None:
                comment.kept = False  # cut off mid-comment: not a kept comment
            elif comment.spoken_to is None:
                comment.unspoken = comment.spoken_from is None
                if comment.spoken_from is not None:
                    comment.spoken_to = comment.spoken_from + reading_time(comment.text)
        self._settle(final=True)

    def _settle(self, final: bool = False) -> None:
        """Write the cues of the oldest comments whose times are known, in start order."""
        while self._order:
            comment = self._open[self._order[0]]
            if comment.kept is None:
                return
            if not comment.kept:
                self._pop()
                continue
            span = self._span(comment, final)
            if span is None:
                return
            self._pop()
            start = max(span[0], self._last_end)
            end = max(span[1], start + MIN_CUE_S)
            for cue in cues_for(comment.text, start, end):
                self.out.write(cue)
            self._last_end = end

    def _span(self, comment: _Comment, final: bool) -> tuple[float, float] | None:
        if comment.spoken_to is not None and comment.spoken_from is not None:
            return comment.spoken_from, comment.spoken_to
        if not comment.unspoken:
            return None  # its speech is still to come
        end = comment.shown_at + reading_time(comment.text)
        for later in (self._open[cid] for cid in self._order[1:]):
            if later.kept is not False:  # a comment that started after it ends it (at worst a little early)
                bound = later.spoken_from if later.spoken_from is not None else later.shown_at
                return comment.shown_at, min(end, bound)
        if final or self._now >= end:
            return comment.shown_at, end
        return None  # the next comment may still come and end it sooner

    def _pop(self) -> None:
        del self._open[self._order.pop(0)]


SUBTITLE_EVENTS = (
    ev.CameraStarted,
    ev.CommentaryStarted,
    ev.CommentaryFinished,
    ev.SpeechStarted,
    ev.SpeechEnded,
    ev.SpeechSkipped,
)


class CueFeed:
    """Routes a session's events to one ``CueTimer`` per camera; ``files_for(camera_id, index)`` opens a
    camera's subtitle files when it starts (``index`` 0 for the session's first camera), or returns None
    to leave that camera out."""

    def __init__(self, files_for: Callable[[str, int], SubtitleFiles | None]) -> None:
        self._files_for = files_for
        self.timers: dict[str, CueTimer] = {}
        self._files: list[SubtitleFiles] = []
        self._seen = 0

    def feed(self, event: ev.Event) -> None:
        camera = event.camera.id if event.camera else ""
        if isinstance(event, ev.CameraStarted):
            files = self._files_for(camera, self._seen)
            self._seen += 1
            if files is not None:
                self._files.append(files)
                self.timers[camera] = CueTimer(files, event.speaks)
            return
        timer = self.timers.get(camera)
        if timer is None:
            return
        if isinstance(event, ev.CommentaryStarted):
            timer.started(event.comment_id, event.t)
        elif isinstance(event, ev.CommentaryFinished):
            timer.finished(event.comment_id, event.text, not event.suppressed)
        elif isinstance(event, ev.SpeechStarted):
            timer.speech_started(event.comment_id, event.at)
        elif isinstance(event, ev.SpeechEnded):
            timer.speech_ended(event.comment_id, event.t)
        elif isinstance(event, ev.SpeechSkipped):
            timer.speech_skipped(event.comment_id)
        timer.advance(event.t)

    def close(self) -> None:
        """The session is over: write what is left and close the files."""
        for timer in self.timers.values():
            timer.close()
        for files in self._files:
            files.close()
