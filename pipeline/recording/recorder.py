"""The recorder: every session kept in a folder of its own, written as it happens.

A consumer like any other: it gets every event (``events.jsonl``, flushed per line), times the kept
comments into subtitles (``subtitles.srt`` and ``.vtt``), streams what each camera says to its narration
file (``narration.ogg``) and keeps ``session.json`` current. Everything is appended and flushed as it
comes, so a crash loses at most the last fraction of a second; ``session.json`` says ``interrupted``
until the session ends. A recording that cannot be written (a full disk, a folder that went away) stops
with one clear note on the bus; commentary never stops for it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sqlite3
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pipeline.camera import camera_id
from pipeline.consumers.base import Consumer
from pipeline.consumers.events_file import EventLog
from pipeline.events import Alert, AlertClip, CameraStarted, CameraTag, CommentaryFinished, ErrorEvent, Event
from pipeline.recording.folder import (
    EVENTS,
    CameraMeta,
    SessionMeta,
    camera_file,
    default_record_dir,
    new_folder,
    write_meta,
)
from pipeline.recording.history import HistoryIndex
from pipeline.recording.narration_file import NarrationFile
from pipeline.recording.subtitles import CueFeed, SubtitleFiles
from pipeline.recording.upkeep import EVERY, tidy
from pipeline.recording.video import VideoRecorder

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.sources.base import Source
    from pipeline.speech.speaker import AudioOut

log = logging.getLogger(__name__)

META_EVERY = 10.0  # seconds between rewrites of session.json while the session runs
SILENCE_LAG = 1.0  # narration silence is written this far behind the newest media time (speech may still come)


def folder_label(camera_name: str) -> str:
    """A short label for the folder name: a file's name, a camera URL's host (``front-door.mp4``, ``cam-local``)."""
    short = (urlsplit(camera_name).hostname or "") if "://" in camera_name else Path(camera_name).name
    return camera_id(short) if short else "session"


class Recorder(Consumer):
    """Writes one session folder under ``root``; ``folder`` is where, once the first camera started."""

    name = "recorder"
    queue_size = 100_000
    tick = 0.5
    hears_audio = True
    keeps_video = True
    keeps_alert_files = True

    def __init__(
        self, root: Path, owner: str | None = None, keep_days: float | None = None, max_gb: float | None = None
    ) -> None:
        super().__init__()
        self.root = root
        self.owner = owner
        self.keep_days, self.max_gb = keep_days, max_gb
        self._tidied = time.monotonic()  # the front end tidied at start; then every hour from here
        self.folder: Path | None = None
        self.meta: SessionMeta | None = None
        self.stopped_because: str | None = None  # why the recording stopped early, once it has
        self._log: EventLog | None = None
        self._cues = CueFeed(self._subtitle_files)
        self._narration: dict[str, NarrationFile] = {}
        self._video: dict[str, VideoRecorder] = {}  # made on the starting thread, written on the recorder's
        self._copies: list[tuple[str, Path, str]] = []  # uploads to copy in: camera id, file, stem
        self._segments: dict[str, list[str]] = {}  # camera id → its video files so far
        self._tapped = 0  # cameras offered to video_tap so far
        self._audio: deque[tuple[str, AudioOut]] = deque()  # filled on the speakers' threads
        self._media_now: dict[str, float] = {}
        self._meta_written = 0.0
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Recorder | None:
        """On unless ``--no-record``; in ``--record-dir`` (``ONLOOKER_RECORD_DIR``) or the user's data folder."""
        if not settings.record:
            return None
        return cls(settings.record_dir or default_record_dir(), None, settings.keep_days, settings.max_record_gb)

    # --- the consumer's hooks ---
    def hear(self, camera: CameraTag, chunk: AudioOut) -> None:
        if self.stopped_because is None and not self._closed:
            self._audio.append((camera.id, chunk))

    def video_tap(self, camera: CameraTag, source: Source) -> VideoRecorder | None:
        """The source video, for sources that are not already a file on disk (network video, cameras,
        the webcam); made before the camera's first event, so the folder is made here if need be."""
        index = self._tapped  # the camera's place in the session: its files are named by it
        self._tapped += 1
        if self.stopped_because is not None or (source.kind == "file" and not source.temporary):
            return None
        try:
            if self.folder is None:
                self._make_folder(camera.name)
        except OSError as exc:
            self._stop_recording(exc)
            return None
        assert self.folder is not None
        stem = camera_file(index, camera.id, "video", "")
        if source.kind == "file":  # an upload: its own copy, since the upload cache will not keep it
            self._copies.append((camera.id, Path(source.uri), stem))
            return None
        video = VideoRecorder(self.folder, stem, lambda name: self._video_segment(camera.id, name))
        self._video[camera.id] = video
        return video

    def handle(self, event: Event) -> None:
        if self.stopped_because is not None:
            return
        try:
            self._record(event)
        except OSError as exc:
            self._stop_recording(exc)

    def idle(self) -> None:
        if self.stopped_because is not None or self.meta is None:
            return
        try:
            self._write_audio()
            for video in self._video.values():
                video.write()
            while self._copies:
                self._copy_upload(*self._copies.pop())
            if time.monotonic() - self._tidied > EVERY:
                self._tidied = time.monotonic()
                assert self.folder is not None
                tidy(self.root, self.keep_days, self.max_gb, keep={self.folder.name})
            if time.monotonic() - self._meta_written > META_EVERY:
                self._write_meta()
        except OSError as exc:
            self._stop_recording(exc)

    def ended(self) -> None:
        """The session is over (or stopped): finish every file; ``session.json`` no longer says interrupted."""
        if self._closed or self.meta is None:
            self._closed = True
            return
        self._closed = True
        try:
            if self.stopped_because is None:
                self._write_audio(final=True)
            self.meta.ended = time.time()
            self.meta.interrupted = False
            closing = (*(n.close for n in self._narration.values()), *(v.close for v in self._video.values()))
            for finish in (self._cues.close, *closing, self._note_video, self._write_meta):
                finish()
        except OSError as exc:
            if self.stopped_because is None:  # already said once on the bus otherwise
                log.warning("recording %s could not be finished: %s", self.folder, exc)
        finally:
            if self._log is not None:
                with contextlib.suppress(OSError):
                    self._log.close()
        self._index()

    def _index(self) -> None:
        """The finished session goes into the History's index (a cache: a failure here loses nothing)."""
        assert self.folder is not None
        try:
            with HistoryIndex(self.root) as index:
                index.add(self.folder)
        except (OSError, ValueError, sqlite3.Error) as exc:
            # A cache: the History catches up with the folders when it is next read (HistoryIndex.catch_up).
            log.debug("history: %s not indexed yet (%s)", self.folder, exc)

    # --- writing ---
    def _record(self, event: Event) -> None:
        if self._log is None:
            self._open(event)
        assert self.meta is not None and self._log is not None
        self._log.write(event)
        camera = event.camera.id if event.camera else ""
        self._media_now[camera] = max(self._media_now.get(camera, 0.0), event.t)
        self.meta.duration = max(self.meta.duration, event.t)
        if isinstance(event, CameraStarted):
            self._add_camera(event)
        elif isinstance(event, CommentaryFinished) and not event.suppressed and event.text.strip():
            self.meta.comments += 1
        elif isinstance(event, ErrorEvent):
            self.meta.errors += 1
        elif isinstance(event, Alert):
            self.meta.alerts += event.state == "started"
            self._keep(event.snapshot, event.jpeg)
        elif isinstance(event, AlertClip):
            self._keep(event.clip, event.mp4)
        self._cues.feed(event)

    def _keep(self, name: str, data: bytes) -> None:
        """An alert's snapshot or clip, at the path its event names inside the folder."""
        if not name or not data:
            return
        assert self.folder is not None
        path = self.folder / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)

    def _open(self, first: Event) -> None:
        if self.folder is None:
            self._make_folder(first.camera.name if first.camera else "")
        assert self.folder is not None and self.meta is not None
        self._log = EventLog(self.folder / EVENTS)
        self._write_meta()

    def _make_folder(self, camera_name: str) -> None:
        started = time.time()
        self.folder = new_folder(self.root, started, folder_label(camera_name))
        self.meta = SessionMeta(id=self.folder.name, started=started, owner=self.owner)

    def _add_camera(self, event: CameraStarted) -> None:
        assert self.meta is not None and self.folder is not None and event.camera is not None
        index, camera = len(self.meta.cameras), event.camera
        files = {"events": EVENTS}
        for kind in ("srt", "vtt"):
            files[kind] = camera_file(index, camera.id, "subtitles", f".{kind}")
        if event.speaks:
            files["narration"] = camera_file(index, camera.id, "narration", ".ogg")
            self._narration[camera.id] = NarrationFile(self.folder / files["narration"])
        fields = {k: getattr(event, k) for k in ("source", "kind", "profile", "preset", "instructions", "backend")}
        if event.kind == "file":  # export finds the file from any working directory
            fields["source"] = str(Path(event.source).absolute())
        if camera.id in self._segments:
            files["video"] = list(self._segments[camera.id])
        self.meta.cameras.append(CameraMeta(id=camera.id, name=camera.name, speaks=event.speaks, files=files, **fields))
        self._write_meta()
        if len(self.meta.cameras) == 1:
            self._index()  # listed from the start, as interrupted: a crash leaves it findable

    def _video_segment(self, camera_id: str, name: str) -> None:
        """A new video segment was started (on the recorder's thread): list it in session.json at once."""
        assert self.meta is not None
        self._segments.setdefault(camera_id, []).append(name)
        for camera in self.meta.cameras:
            if camera.id == camera_id:  # else its camera_start is still queued: listed when it comes
                camera.files["video"] = list(self._segments[camera_id])
        self._write_meta()

    def _copy_upload(self, camera_id: str, upload: Path, stem: str) -> None:
        """Keep an uploaded file with the session: a hard link where the upload cache is on the same disk,
        else a copy (on the recorder's thread: commentary does not wait for it)."""
        assert self.folder is not None
        name = stem + upload.suffix.lower()
        try:
            os.link(upload, self.folder / name)
        except OSError:
            shutil.copyfile(upload, self.folder / name)
        self._video_segment(camera_id, name)

    def _note_video(self) -> None:
        """What the video recording could not keep, in the notes (a writer that fell behind drops video)."""
        assert self.meta is not None
        for camera, video in self._video.items():
            if video.stats.dropped:
                self.meta.notes.append(f"{camera}: {video.stats.dropped} video packets or frames dropped (slow disk)")

    def _subtitle_files(self, _camera_id: str, index: int) -> SubtitleFiles | None:
        """The files ``_add_camera`` named for this camera (its camera_start was recorded just before)."""
        assert self.folder is not None and self.meta is not None
        files = self.meta.cameras[index].files
        return SubtitleFiles(self.folder / files["srt"], self.folder / files["vtt"])

    def _write_audio(self, final: bool = False) -> None:
        while self._audio:
            camera, chunk = self._audio.popleft()
            if narration := self._narration.get(camera):
                narration.add(chunk.media_time, chunk.samples)
        for camera, narration in self._narration.items():
            now = self._media_now.get(camera, 0.0)
            narration.fill_to(now if final else now - SILENCE_LAG)

    def _write_meta(self) -> None:
        assert self.folder is not None and self.meta is not None
        write_meta(self.folder, self.meta)
        self._meta_written = time.monotonic()

    def _stop_recording(self, exc: OSError) -> None:
        """Stop writing for good and say why, once; the session goes on."""
        where = self.folder or self.root
        if exc.errno == errno.ENOSPC:
            why = f"the disk is full ({where})"
        else:
            why = f"cannot write {getattr(exc, 'filename', None) or where}: {exc.strerror or exc}"
        self.stopped_because = why
        self._audio.clear()
        if self.meta is not None:
            self.meta.notes.append(f"recording stopped: {why}")
        self.publish(
            ErrorEvent(
                t=max(self._media_now.values(), default=0.0),
                message=f"recording stopped: {why}; commentary goes on without it",
            )
        )
