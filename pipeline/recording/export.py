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
subtitles are placed from there even when the container starts its other streams a little earlier
(``export_inputs`` finds and probes what goes in, and says how recorded segments line up). The MP4 is
exactly as long as the video (``-t``), with ``+faststart`` so it plays while it downloads. It is written
next to ``out`` under a temporary name and renamed when FFmpeg succeeded, so ``out`` is either the whole
export or untouched (an existing ``out`` is replaced). FFmpeg runs with a time limit and is always
reaped; a failure is one ``OnlookerError`` line with the end of FFmpeg's own message.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import OnlookerError
from pipeline.recording.export_inputs import (
    Subtitles,
    Video,
    find_narration,
    find_subtitles,
    probe_video,
    read_session,
    session_camera,
    video_files,
)

COPYABLE = frozenset({"h264", "hevc", "av1"})  # video codecs copied into MP4 as they are
NARRATION_BITRATE = "64k"  # mono speech
ORIGINAL_BITRATE_PER_CHANNEL = 64_000
TIMEOUT_BASE = 60.0  # seconds, plus a multiple of the video's duration (``default_timeout``)
TIMEOUT_PER_SECOND_COPY = 1.0
TIMEOUT_PER_SECOND_ENCODE = 4.0
STDERR_LINES = 3  # of FFmpeg's message in an error


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
    meta = read_session(folder)
    cam = session_camera(meta, camera, folder)
    ffmpeg = _ffmpeg()
    notes: list[str] = []
    video = probe_video(video_files(folder, cam))
    if any(_same_file(out, f) for f in video.files):
        raise OnlookerError(f"{out}: that is the source video itself; export to another file name")
    narration = find_narration(folder, cam, video, notes)
    subtitles = find_subtitles(folder, cam, video, notes)
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


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` is ``b`` (a link or another spelling too): writing it would destroy the source."""
    try:
        return a.exists() and os.path.samefile(a, b)
    except OSError:
        return False


# --- the command ---
def _command(
    ffmpeg: str,
    video: Video,
    narration: Path | None,
    subtitles: Subtitles | None,
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


def _concat_list(video: Video) -> str:
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
