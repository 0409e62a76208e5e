"""What an export takes from a session folder, and how it lines up on the media timeline.

The session and camera (with a clear message when either is wrong), the video's files (the recorded
video, one file or segments in order, else a ``file`` camera's source where it still is on disk), each
probed for codec, size and timing, and the narration and subtitles that go with it. Media time 0 is the
video's first frame: the first segment's first frame (the recorder starts the video with the first frame),
each later segment placed at its own start time relative to it; segments whose times do not increase
(each starting at 0) are joined back to back. What is left out or changed is added to ``notes``.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av

from pipeline.errors import OnlookerError
from pipeline.recording.folder import META, CameraMeta, SessionMeta, read_meta

MP4_HEADER_FORMATS = ("mov", "mp4")  # containers whose header gives exact stream start and duration
PROBE_TIMEOUT = 30.0  # seconds for ffprobe to read a file's header
PAST_END_NOTE = 0.5  # seconds of narration past the video's end worth a note
CUE_START = re.compile(r"^\s*(\d+):(\d\d):(\d\d)[,.](\d{3})\s*-->", re.MULTILINE)
VTT_CUE_START = re.compile(r"^\s*(?:(\d+):)?(\d\d):(\d\d)\.(\d{3})\s*-->", re.MULTILINE)


@dataclass
class Video:
    """The video input, probed: its files, codec, size, and where the frames lie on the input's timeline."""

    files: list[Path]
    stream_index: int  # the first real video stream (not cover art) of the (first) file
    codec: str
    width: int
    height: int
    offset: float  # seconds from the input's start (FFmpeg's zero) to the first frame: media time 0
    duration: float  # seconds from the first frame to the end of the last
    audio_index: int | None  # the source's first audio stream, if any (single files only)
    audio_channels: int
    audio_codec: str | None
    segment_durations: list[float] | None = None  # concat ``duration`` of every segment but the last
    sizes_differ: bool = False  # segments of different sizes (a camera that came back at another resolution)


@dataclass
class Subtitles:
    """The subtitle file that goes in, and its cue counts for the track's description and the notes."""

    path: Path
    cues: int
    past_end: int  # cues that start at or after the video's end


def read_session(folder: Path) -> SessionMeta:
    """The session's ``session.json``; a folder that is none, or a damaged one, said in one line."""
    if not (folder / META).is_file():
        if not folder.is_dir():
            raise OnlookerError(f"{folder}: no such session folder")
        raise OnlookerError(f"{folder} is not a recorded session: it has no {META}")
    try:
        return read_meta(folder)
    except (OSError, ValueError, TypeError) as exc:
        raise OnlookerError(f"{folder / META} cannot be read ({exc}); the recording is damaged") from None


def session_camera(meta: SessionMeta, index: int, folder: Path) -> CameraMeta:
    """Camera ``index`` of the session; out of range, the message says which cameras there are."""
    count = len(meta.cameras)
    if count == 0:
        raise OnlookerError(f"{folder}: the session has no camera (it ended before one started); nothing to export")
    if not 0 <= index < count:
        which = "camera 0" if count == 1 else f"cameras 0 to {count - 1}"
        raise OnlookerError(f"there is no camera {index} in this session: it has {which}")
    return meta.cameras[index]


def video_files(folder: Path, cam: CameraMeta) -> list[Path]:
    """The video's files, in order: the recorded video in the folder, else a file camera's source file."""
    kept = cam.files.get("video")
    if kept:
        names = [kept] if isinstance(kept, str) else list(kept)
        paths = [folder / name for name in names]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise OnlookerError(f"the recorded video {', '.join(missing)} is missing from {folder}; export needs it")
        return paths
    if cam.kind == "file":
        source = Path(cam.source).expanduser()
        if not source.is_file():
            raise OnlookerError(f"the source video {cam.source} is gone; export needs it")
        return [source]
    raise OnlookerError(
        f"camera {cam.name!r} ({cam.kind}) has no recorded video: sessions recorded before Onlooker kept the "
        "video of webcams and live cameras have subtitles and narration only; export needs the video"
    )


def probe_video(files: list[Path]) -> Video:
    """Codec, size and timing of the video; segments' start times place each one on the timeline."""
    spans = [_probe_file(path) for path in files]
    first = spans[0]
    codecs = {span["codec"] for span in spans}
    if len(codecs) > 1:
        listed = ", ".join(sorted(codecs))
        raise OnlookerError(f"the recorded video's segments differ in codec ({listed}); export cannot join them")
    starts = [span["start"] for span in spans]
    durations: list[float] | None = None
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    if gaps and all(gap > 0 for gap in gaps):
        durations = gaps  # each segment at its own start time, so a gap in the recording stays one
        total = spans[-1]["end"] - starts[0]
    else:
        total = sum(span["end"] - span["start"] for span in spans)  # back to back
    single = len(spans) == 1
    return Video(
        files=files,
        stream_index=first["index"],
        codec=first["codec"],
        width=first["width"],
        height=first["height"],
        offset=_first_frame_offset(files[0], first) if single else 0.0,
        duration=total,
        audio_index=first["audio_index"] if single else None,
        audio_channels=first["audio_channels"],
        audio_codec=first["audio_codec"] if single else None,
        segment_durations=durations,
        sizes_differ=len({(span["width"], span["height"]) for span in spans}) > 1,
    )


def _probe_file(path: Path) -> dict:
    try:
        with av.open(str(path)) as container:
            videos = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
            if not videos:
                raise OnlookerError(f"{path} has no video stream")
            stream = videos[0]
            audio = container.streams.audio[0] if container.streams.audio else None
            base = stream.time_base
            container_start = container.start_time / av.time_base if container.start_time is not None else 0.0
            exact = container.format.name.split(",")[0] in MP4_HEADER_FORMATS
            if exact and stream.start_time is not None and stream.duration:
                start = float(stream.start_time * base)
                end = start + float(stream.duration * base)
            else:
                start, end = _scan(container, stream)
            return {
                "index": stream.index,
                "codec": stream.codec_context.name,
                "width": stream.codec_context.width,
                "height": stream.codec_context.height,
                "start": start,
                "end": end,
                "container_start": min(container_start, start),
                "audio_index": audio.index if audio is not None else None,
                "audio_channels": audio.codec_context.channels if audio is not None else 0,
                "audio_codec": audio.codec_context.name if audio is not None else None,
            }
    except av.error.FFmpegError as exc:
        raise OnlookerError(f"cannot read the video {path}: {exc}") from None


def _first_frame_offset(path: Path, probed: dict) -> float:
    """Seconds from FFmpeg's zero for this input (its earliest stream's start) to the first video frame.

    Asked of ffprobe, which shares the ``ffmpeg`` CLI's libraries: PyAV may bring another FFmpeg that
    sees a stream's start differently (an Opus track's pre-skip, a few ms before 0); PyAV's view when
    there is no ffprobe."""
    fallback = max(probed["start"] - probed["container_start"], 0.0)
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return fallback
    entries = "format=start_time:stream=index,start_time"
    try:
        done = subprocess.run(
            [ffprobe, "-v", "error", "-show_entries", entries, "-of", "json", str(path)],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
        )
        data = json.loads(done.stdout)
        video = next(s for s in data["streams"] if s["index"] == probed["index"])
        return max(float(video["start_time"]) - float(data["format"]["start_time"]), 0.0)
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, StopIteration):
        return fallback


def _scan(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> tuple[float, float]:
    """First frame's time and last frame's end from the packets (MPEG-TS and Matroska give no exact duration)."""
    base = stream.time_base
    rate = stream.average_rate or stream.guessed_rate
    frame = 1 / float(rate) if rate else 0.0
    first = last = None
    last_duration = 0.0
    for packet in container.demux(stream):
        if packet.pts is None:
            continue
        if first is None or packet.pts < first:
            first = packet.pts
        if last is None or packet.pts >= last:
            last, last_duration = packet.pts, float(packet.duration * base) if packet.duration else frame
    if first is None or last is None:
        raise OnlookerError(f"{container.name} has no video frames")
    return float(first * base), float(last * base) + last_duration


def find_narration(folder: Path, cam: CameraMeta, video: Video, notes: list[str]) -> Path | None:
    """The camera's narration file; missing or unreadable, the MP4 goes without it (a note says so)."""
    name = cam.files.get("narration")
    if not name:
        return None
    path = folder / name
    if not path.is_file():
        notes.append(f"the narration file {name} is missing: the MP4 has no narration")
        return None
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise av.error.InvalidDataError(0, "no audio stream")
            length = container.duration / av.time_base if container.duration else 0.0
    except av.error.FFmpegError as exc:
        notes.append(f"the narration file {name} cannot be read ({exc}): the MP4 has no narration")
        return None
    if length > video.duration + PAST_END_NOTE:
        past = length - video.duration
        notes.append(f"the narration goes on {past:.1f} s past the video's end (a looped file?): cut there")
    return path


def find_subtitles(folder: Path, cam: CameraMeta, video: Video, notes: list[str]) -> Subtitles | None:
    """The camera's SRT, else its WebVTT; None when neither holds a cue (FFmpeg cannot open an empty file)."""
    for kind, pattern in (("srt", CUE_START), ("vtt", VTT_CUE_START)):
        name = cam.files.get(kind)
        if not name or not (folder / name).is_file():
            continue
        text = (folder / name).read_text(encoding="utf-8", errors="replace")
        starts = [int(h or 0) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000 for h, m, s, ms in pattern.findall(text)]
        if not starts:
            return None  # the camera kept no comment
        past = sum(1 for start in starts if start >= video.duration)
        if past:
            notes.append(f"{past} subtitle(s) after the video's end left out")
        return Subtitles(folder / name, len(starts), past)
    return None
