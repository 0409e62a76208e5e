"""A local video file played at its native frame rate, optionally looped."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import av

from pipeline.errors import SourceError
from pipeline.frames import Frame
from pipeline.sources.base import Source
from pipeline.sources.decode import DecodeStats, decode_frames, open_video


def check_video_file(path: Path) -> None:
    """Fail fast, before any thread starts, on the mistakes people actually make with files."""
    if not path.exists():
        raise SourceError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise SourceError(f"{path}: is a folder; pass a video file inside it")
    if path.stat().st_size == 0:
        raise SourceError(f"{path}: the file is empty (0 bytes); the copy or download probably failed")


class FileSource(Source):
    """Plays a file in real time so commentary happens at the pace a viewer would see it."""

    kind = "file"
    live = False

    def __init__(self, path: str | Path, loop: bool = False, source_id: str | None = None, rate: float = 1.0) -> None:
        self.path = Path(path).expanduser()
        super().__init__(str(self.path), source_id)
        self.loop = loop
        self.rate = rate  # playback speed; tests and benchmarks replay faster than real time
        self.stats = DecodeStats()
        check_video_file(self.path)
        # Probe now, in the caller's thread, so a bad file is an immediate error, not a status event.
        with open_video(str(self.path), str(self.path)) as container:
            #: Seconds, as the container says (None when it does not), for limits checked before playing.
            self.duration = container.duration / av.time_base if container.duration else None

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        container = open_video(str(self.path), str(self.path))
        try:
            yield from decode_frames(
                container,
                stop,
                self.source_id,
                str(self.path),
                paced=True,
                rate=self.rate,
                loop=self.loop,
                stats=self.stats,
            )
        finally:
            container.close()
