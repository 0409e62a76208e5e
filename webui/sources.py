"""The source panel's choices → a pipeline Source: webcam, an uploaded file (within the app's limits) or
a URL (checked by the shared app's guard)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Settings
from pipeline.errors import OnlookerError, SourceError
from pipeline.sources.base import Source
from pipeline.sources.file import FileSource
from pipeline.sources.guard import UrlGuard
from pipeline.sources.resolve import open_source
from pipeline.sources.urls import mask_url
from pipeline.sources.webcam import PushSource

MODES = ("Webcam", "Upload", "URL")


@dataclass(frozen=True)
class SourceRequest:
    """What the user picked in the source panel."""

    mode: str
    upload: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class UploadLimits:
    """The largest and the longest video file a visitor may upload; 0 means no limit.

    Uploads come from anyone who can reach the app, and a file is played whole at its native rate, so a
    20 GB or ten-hour file would hold a session (and the disk Gradio copied it to) for hours.
    """

    megabytes: int = 0
    minutes: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(settings.max_upload_mb, settings.max_upload_minutes)

    @property
    def max_bytes(self) -> int | None:
        """The size limit in bytes, as Gradio's ``max_file_size`` takes it (None: no limit)."""
        return self.megabytes * 1024 * 1024 or None

    def open(self, upload: str) -> FileSource:
        """The FileSource for an uploaded file, refused when it is over a limit: the size is checked before
        FFmpeg opens the file, the duration (from the container) right after."""
        path = Path(upload)
        size = path.stat().st_size if path.is_file() else 0
        if self.max_bytes and size > self.max_bytes:
            raise OnlookerError(
                f"{path.name}: the file is {size / 1024**2:,.0f} MB, over this app's upload limit of "
                f"{self.megabytes} MB (--max-upload-mb / ONLOOKER_MAX_UPLOAD_MB); trim or re-encode it smaller"
            )
        try:
            source = FileSource(path)
        except SourceError as exc:  # the visitor knows their file by its name, not by Gradio's temporary path
            raise SourceError(str(exc).replace(str(path), path.name)) from None
        if self.minutes and source.duration and source.duration > self.minutes * 60:
            length = time.strftime("%H:%M:%S", time.gmtime(source.duration))
            raise OnlookerError(
                f"{path.name}: the video is {length} long, over this app's limit of {self.minutes:g} minutes "
                "(--max-upload-minutes / ONLOOKER_MAX_UPLOAD_MINUTES); trim it shorter"
            )
        source.temporary = True  # Gradio's upload cache is cleaned: a recording keeps its own copy
        return source


def source_label(request: SourceRequest) -> str:
    """What the page says it is starting: the file's name or the URL without its password."""
    if request.mode == "Upload":
        return Path(request.upload).name if request.upload else "a video file"
    if request.mode == "URL":
        return mask_url((request.url or "").strip())
    return "your camera"


def make_source(
    request: SourceRequest,
    guard: UrlGuard | None = None,
    rtsp_transport: str = "tcp",
    limits: UploadLimits | None = None,
) -> Source:
    """The Source for the chosen mode; a missing or bad input, an upload over the ``limits``, or a URL a
    visitor of a shared app may not open (``guard``), raises OnlookerError saying what to do."""
    if request.mode == "Webcam":
        return PushSource()
    if request.mode == "Upload":
        if not request.upload:
            raise OnlookerError("choose a video file to upload first")
        return (limits or UploadLimits()).open(request.upload)
    if request.mode == "URL":
        if not (request.url or "").strip():
            raise OnlookerError("type a stream or camera URL first (rtsp://, http://, an HLS .m3u8, a YouTube page…)")
        url = guard.check(request.url or "") if guard is not None else request.url or ""
        return open_source(url, guard=guard, rtsp_transport=rtsp_transport)
    raise OnlookerError(f"unknown source mode '{request.mode}'; allowed: {', '.join(MODES)}")
