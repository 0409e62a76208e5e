"""``--subtitles FILE.srt|.vtt``: the first camera's comments as one subtitle file, written as they come.

Independent of the recorder (it works with ``--no-record``); the timing is the recorder's (``CueTimer``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.consumers.base import Consumer
from pipeline.errors import ConfigError
from pipeline.events import Event
from pipeline.recording.subtitles import SUBTITLE_EVENTS, CueFeed, SubtitleFiles

if TYPE_CHECKING:
    from pipeline.config import Settings


class SubtitlesFile(Consumer):
    """Subtitles of the session's first camera to one file; its suffix says the format."""

    name = "subtitles"
    wants = SUBTITLE_EVENTS
    queue_size = 100_000

    def __init__(self, path: Path) -> None:
        super().__init__()
        suffix = path.suffix.lower()
        if suffix not in (".srt", ".vtt"):
            raise ConfigError(f"--subtitles: {path}: use a file name ending in .srt or .vtt")
        try:
            files = SubtitleFiles(path if suffix == ".srt" else None, path if suffix == ".vtt" else None)
        except OSError as exc:
            raise ConfigError(f"--subtitles: cannot write {path}: {exc.strerror or exc}") from None
        self._files = files
        self._cues = CueFeed(lambda _camera, index: files if index == 0 else None)

    @classmethod
    def from_settings(cls, settings: Settings) -> SubtitlesFile | None:
        return cls(settings.subtitles) if settings.subtitles else None

    def handle(self, event: Event) -> None:
        self._cues.feed(event)

    def ended(self) -> None:
        self._cues.close()
        self._files.close()  # also when no camera ever started
