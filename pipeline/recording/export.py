"""A recorded session as one narrated MP4, made by the FFmpeg command-line tool.

What goes in, from one camera of a session folder (``session.json`` says which files are its):

* **video**: the camera's recorded video (``files["video"]``: one file, or segments in order that are
  joined with FFmpeg's concat demuxer, each placed at its own start time so gaps stay gaps), or for a
  ``file`` camera the video file it played, where it still is on disk. Copied as it is when MP4 can hold
  it (H.264, HEVC, AV1); re-encoded with libx264 (``-preset veryfast``) only when it cannot (MJPEG from
  an MJPEG camera, VP8, …) or when the subtitles are burned in.
* **narration**: the camera's ``narration.ogg`` as the first audio track, AAC, marked default, titled
  "narration". Shorter than the video, it is padded with silence; longer (a looped file), it is cut.
* **original sound**: the source's own first audio track as a *second track* titled "original", not
  marked default; copied when it is AAC already (most MP4 sources: no second generation, and half the
  time of a copy export; it then ends where it ends, cut at the video's end), else encoded to AAC and
  padded with silence to the video's end. Why a second track rather than mixed in low under the
  narration: nothing is lost or decided for the viewer (a player switches tracks; an editor gets both
  apart), the narration stays as clear as it was spoken, and no mixing level has to suit both a quiet
  room and a loud street. Without a narration the original sound is the only, default track.
* **subtitles**: the camera's SRT (its WebVTT when there is no SRT) as a soft ``mov_text`` track with no
  language (``und``: nothing says which language the comments are in), shown by default where a
  player honours that; or burned into the picture with FFmpeg's ``subtitles`` filter
  (``burn_subtitles``), and then there is no subtitle track.

Everything is on the media timeline: media time 0 is the video's first frame, and the narration and
subtitles are placed from there even when the container starts its other streams a little earlier.
Recorded segments carry their media times: the first segment's first frame is media time 0 (the
recorder starts the video with the first frame) and each later one is placed at its own start time
relative to it; segments whose times do not increase (each starting at 0) are joined back to back.
The MP4 is exactly as long as the video (``-t``), with ``+faststart`` so it plays while it downloads.
It is written next to ``out`` under a temporary name and renamed when FFmpeg succeeded, so ``out`` is
either the whole export or untouched (an existing ``out`` is replaced). FFmpeg runs with a time limit
and is always reaped; a failure is one ``OnlookerError`` line with the end of FFmpeg's own message.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import av

from pipeline.errors import OnlookerError
from pipeline.recording.folder import META, CameraMeta, SessionMeta, read_meta

COPYABLE = frozenset({"h264", "hevc", "av1"})  # video codecs copied into MP4 as they are
MP4_HEADER_FORMATS = ("mov", "mp4")  # containers whose header gives exact stream start and duration
NARRATION_BITRATE = "64k"  # mono speech
ORIGINAL_BITRATE_PER_CHANNEL = 64_000
TIMEOUT_BASE = 60.0  # seconds, plus a multiple of the video's duration (``default_timeout``)
TIMEOUT_PER_SECOND_COPY = 1.0
TIMEOUT_PER_SECOND_ENCODE = 4.0
PROBE_TIMEOUT = 30.0  # seconds for ffprobe to read a file's header
STDERR_LINES = 3  # of FFmpeg's message in an error
PAST_END_NOTE = 0.5  # seconds of narration past the video's end worth a note


@dataclass
class ExportResult:
    """What ``export_session`` made: where, how long it took (wall seconds), how long the MP4 is (media
    seconds), its tracks in order, in words, and notes on what was left out or changed."""

    path: Path
    seconds: float
    duration: float
    tracks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def default_export_name(folder: Path) -> str:
    """The export's file name for a session folder: the folder's name (its date and label) and ``.mp4``."""
    return f"{Path(folder).name}.mp4"


@dataclass
class _Video:
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
class _Subtitles:
    path: Path
    cues: int
    past_end: int  # cues that start at or after the video's end


def export_session(
    folder: Path,
    out: Path,
    *,
    camera: int = 0,
    burn_subtitles: bool = False,
    timeout: float | None = None,
) -> ExportResult:
    """Write camera ``camera`` of the session in ``folder`` as a narrated MP4 at ``out``.

    ``timeout``: seconds FFmpeg may take (None: ``default_timeout`` for the video's duration). Raises
    ``OnlookerError`` with one line saying what is wrong (the folder, the camera, a missing video) or
    why FFmpeg failed."""
    began = time.monotonic()
    folder, out = Path(folder), Path(out)
    meta = _read_session(folder)
    cam = _camera(meta, camera, folder)
    ffmpeg = _ffmpeg()
    notes: list[str] = []
    video = _probe_video(_video_files(folder, cam))
    if any(_same_file(out, f) for f in video.files):
        raise OnlookerError(f"{out}: that is the source video itself; export to another file name")
    narration = _narration(folder, cam, video, notes)
    subtitles = _subtitles(folder, cam, video, notes)
    if burn_subtitles and subtitles is None:
        notes.append("no subtitles to burn in (no comments were kept)")
    burn = burn_subtitles and subtitles is not None
    encode = burn or video.codec not in COPYABLE or video.sizes_differ
    if video.codec not in COPYABLE:
        notes.append(f"the video ({video.codec}) cannot go into MP4 as it is: re-encoded as H.264")
    if video.sizes_differ:
        notes.append(f"the video changes size between segments: re-encoded at {video.width}x{video.height}")
    if narration is None and video.audio_index is None:
        notes.append("no narration and no original sound: the MP4 is silent")
    elif narration is None:
        notes.append("this camera did not speak: the MP4 has the original sound only")
    elif video.audio_index is None:
        notes.append("the source has no sound of its own: the MP4 has the narration only")

    if out.is_dir():
        raise OnlookerError(f"{out} is a folder; give the export a file name such as {default_export_name(folder)}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OnlookerError(f"cannot write {out}: {exc.strerror or exc}") from None
    partial = out.with_name(f".{out.name}.part")
    with tempfile.TemporaryDirectory(prefix="onlooker-export-") as tmp:
        command, tracks = _command(ffmpeg, video, narration, subtitles, burn, encode, Path(tmp), partial)
        limit = timeout if timeout is not None else default_timeout(video.duration, encode)
        try:
            _run(command, limit)
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    return ExportResult(out, round(time.monotonic() - began, 3), round(video.duration, 3), tracks, notes)


def default_timeout(duration: float, encode: bool) -> float:
    """How long FFmpeg may take by default: a minute plus the video's duration when copying (copying
    runs at hundreds of times real time), four times it when re-encoding (veryfast on a slow CPU)."""
    return TIMEOUT_BASE + duration * (TIMEOUT_PER_SECOND_ENCODE if encode else TIMEOUT_PER_SECOND_COPY)


# --- what goes in ---
def _read_session(folder: Path) -> SessionMeta:
    if not (folder / META).is_file():
        if not folder.is_dir():
            raise OnlookerError(f"{folder}: no such session folder")
        raise OnlookerError(f"{folder} is not a recorded session: it has no {META}")
    try:
        return read_meta(folder)
    except (OSError, ValueError, TypeError) as exc:
        raise OnlookerError(f"{folder / META} cannot be read ({exc}); the recording is damaged") from None


def _camera(meta: SessionMeta, index: int, folder: Path) -> CameraMeta:
    count = len(meta.cameras)
    if count == 0:
        raise OnlookerError(f"{folder}: the session has no camera (it ended before one started); nothing to export")
    if not 0 <= index < count:
        which = "camera 0" if count == 1 else f"cameras 0 to {count - 1}"
        raise OnlookerError(f"there is no camera {index} in this session: it has {which}")
    return meta.cameras[index]


def _video_files(folder: Path, cam: CameraMeta) -> list[Path]:
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


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _probe_video(files: list[Path]) -> _Video:
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
    return _Video(
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


def _narration(folder: Path, cam: CameraMeta, video: _Video, notes: list[str]) -> Path | None:
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


CUE_START = re.compile(r"^\s*(\d+):(\d\d):(\d\d)[,.](\d{3})\s*-->", re.MULTILINE)
VTT_CUE_START = re.compile(r"^\s*(?:(\d+):)?(\d\d):(\d\d)\.(\d{3})\s*-->", re.MULTILINE)


def _subtitles(folder: Path, cam: CameraMeta, video: _Video, notes: list[str]) -> _Subtitles | None:
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
        return _Subtitles(folder / name, len(starts), past)
    return None


# --- the command ---
def _command(
    ffmpeg: str,
    video: _Video,
    narration: Path | None,
    subtitles: _Subtitles | None,
    burn: bool,
    encode: bool,
    tmp: Path,
    partial: Path,
) -> tuple[list[str], list[str]]:
    """FFmpeg's arguments, and the output's tracks in words."""
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    if len(video.files) > 1:
        listing = tmp / "segments.ffconcat"
        listing.write_text(_concat_list(video), encoding="utf-8")
        cmd += ["-f", "concat", "-safe", "0", "-i", str(listing)]
        video_map = "0:v:0"
    else:
        cmd += ["-i", str(video.files[0])]
        video_map = f"0:{video.stream_index}"
    inputs = 1
    shift = ["-itsoffset", f"{video.offset:.6f}"] if video.offset > 0.0005 else []
    narration_input = subtitle_input = None
    if narration is not None:
        cmd += [*shift, "-i", str(narration)]
        narration_input, inputs = inputs, inputs + 1
    if subtitles is not None and not burn:
        cmd += [*shift, "-i", str(subtitles.path)]
        subtitle_input, inputs = inputs, inputs + 1

    end = video.offset + video.duration  # the last frame's end on the output's timeline
    graph, maps, codecs, tracks = [], [], [], []
    if encode:
        chain = []
        width, height = video.width // 2 * 2, video.height // 2 * 2  # 4:2:0 needs even sides
        if video.sizes_differ:  # one size for the whole MP4: the first segment's, others fitted in
            fit = f"scale={width}:{height}:force_original_aspect_ratio=decrease"
            chain.append(f"{fit},pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1")
        elif (width, height) != (video.width, video.height):
            chain.append(f"scale={width}:{height}")
        if burn and subtitles is not None:
            subtitle_filter = f"subtitles=filename={_filter_value(str(subtitles.path))}"
            if video.offset > 0.0005:  # the filter times cues by the frames' timestamps: make them media times
                shift_back = f"{video.offset:.6f}/TB"
                subtitle_filter = f"setpts=PTS-{shift_back},{subtitle_filter},setpts=PTS+{shift_back}"
            chain.append(subtitle_filter)
        chain.append("format=yuv420p")
        graph.append(f"[{video_map}]{','.join(chain)}[v]")
        maps += ["-map", "[v]"]
        codecs += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", *_passthrough_timing(ffmpeg)]
        why = "subtitles burned in" if burn else f"re-encoded from {video.codec}"
        tracks.append(f"video: H.264 {width}x{height} ({why})")
    else:
        maps += ["-map", video_map]
        codecs += ["-c:v", "copy"]
        if video.codec == "hevc":
            codecs += ["-tag:v", "hvc1"]  # what Apple's players ask for
        tracks.append(f"video: {_codec_name(video.codec)} {video.width}x{video.height} (copied)")

    audio = 0
    if narration_input is not None:
        graph.append(f"[{narration_input}:a:0]apad[narration]")
        maps += ["-map", "[narration]"]
        codecs += [f"-c:a:{audio}", "aac", f"-b:a:{audio}", NARRATION_BITRATE]
        codecs += _audio_labels(audio, "narration", default=True)
        tracks.append("audio 1: narration (AAC, default)")
        audio += 1
    if video.audio_index is not None:
        default = ", default" if audio == 0 else ""
        if video.audio_codec == "aac":  # copied: no second generation, and the slowest part of a copy export
            maps += ["-map", f"0:{video.audio_index}"]
            codecs += [f"-c:a:{audio}", "copy"]
            tracks.append(f"audio {audio + 1}: original (AAC{default}, copied)")
        else:
            graph.append(f"[0:{video.audio_index}]apad[original]")
            maps += ["-map", "[original]"]
            bitrate = ORIGINAL_BITRATE_PER_CHANNEL * max(video.audio_channels, 2)
            codecs += [f"-c:a:{audio}", "aac", f"-b:a:{audio}", str(bitrate)]
            tracks.append(f"audio {audio + 1}: original (AAC{default})")
        codecs += _audio_labels(audio, "original", default=audio == 0)
        audio += 1
    if subtitle_input is not None and subtitles is not None:
        maps += ["-map", f"{subtitle_input}:s:0"]
        codecs += ["-c:s", "mov_text", "-disposition:s:0", "default"]
        tracks.append(f"subtitles: mov_text ({subtitles.cues - subtitles.past_end} cues)")
    if graph:
        cmd += ["-filter_complex", ";".join(graph)]
    cmd += [*maps, *codecs, "-t", f"{end:.6f}", "-movflags", "+faststart", "-f", "mp4", str(partial)]
    return cmd, tracks


def _audio_labels(index: int, title: str, default: bool) -> list[str]:
    """A track's name as players show it (MP4 keeps it as the track's name and its handler's name)."""
    return [
        f"-metadata:s:a:{index}",
        f"title={title}",
        f"-metadata:s:a:{index}",
        f"handler_name={title}",
        f"-disposition:a:{index}",
        "default" if default else "0",
    ]


def _codec_name(codec: str) -> str:
    return {"h264": "H.264", "hevc": "HEVC", "av1": "AV1"}.get(codec, codec)


def _concat_list(video: _Video) -> str:
    """The concat demuxer's list: every segment, and, when their start times say so, how far apart they start."""
    lines = ["ffconcat version 1.0"]
    for number, path in enumerate(video.files):
        quoted = str(path.resolve()).replace("'", "'\\''")
        lines.append(f"file '{quoted}'")
        if video.segment_durations is not None and number < len(video.segment_durations):
            lines.append(f"duration {video.segment_durations[number]:.6f}")
    return "\n".join(lines) + "\n"


def _filter_value(text: str) -> str:
    """``text`` as one option value inside a filter graph: escaped for the option parser (``\\ ' :``),
    then again for the graph parser (``\\ ' [ ] , ;``)."""
    option = re.sub(r"([\\':])", r"\\\1", text)
    return re.sub(r"([\\'\[\],;])", r"\\\1", option)


# --- running FFmpeg ---
def _ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise OnlookerError("FFmpeg is not installed (no ffmpeg on PATH); export needs it")
    return path


@functools.cache
def _passthrough_timing(ffmpeg: str) -> tuple[str, ...]:
    """Keep each frame's own time when re-encoding (a webcam's frames come when they come; MP4 would
    otherwise be given a constant rate, with frames duplicated or dropped): ``-fps_mode`` from FFmpeg 5.1,
    ``-vsync`` before."""
    try:
        first = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        first = ""
    found = re.search(r"version n?(\d+)\.(\d+)", first)
    old = found is not None and (int(found.group(1)), int(found.group(2))) < (5, 1)
    return ("-vsync", "vfr") if old else ("-fps_mode", "vfr")


def _run(cmd: list[str], timeout: float) -> None:
    """Run FFmpeg to its end within ``timeout`` seconds; it is always reaped, also on an exception."""
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as exc:
        raise OnlookerError(f"FFmpeg could not be started: {exc.strerror or exc}") from None
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise OnlookerError(f"export stopped: FFmpeg took longer than {timeout:g} s") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
        said = " | ".join(lines[-STDERR_LINES:]) or "no message"
        raise OnlookerError(f"export failed: FFmpeg exited with code {proc.returncode}: {said}")
