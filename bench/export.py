"""Export benchmark: how long a recorded session takes to become a narrated MP4 (``export_session``).

A 10-minute session is made from real files: a 720p30 source with sound (FFmpeg's ``testsrc2`` and a
sine, libx264 ``ultrafast``), a narration written by ``NarrationFile`` (4 s of tone every 15 s, silence
between, as a talkative camera leaves it) and a subtitle cue per utterance. Three exports are timed:

* ``copy``: a file camera's source, the video stream-copied; the narration and the original sound
  encoded to AAC, the subtitles as ``mov_text``;
* ``segments``: the same video as a live camera's recording, one-minute MPEG-TS segments joined by the
  concat demuxer, stream-copied;
* ``burn``: the subtitles burned in, so the video is re-encoded (libx264 ``veryfast``).

For each: wall seconds, times real time (media seconds per wall second), the MP4's size and length.

    python bench/export.py [--minutes 10] [--no-burn]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from common import report  # first: puts the repository on sys.path

# isort: split
from pipeline.recording.export import export_session
from pipeline.recording.folder import CameraMeta, SessionMeta, write_meta
from pipeline.recording.narration_file import RATE, NarrationFile
from pipeline.recording.subtitles import Cue, SubtitleFiles

WIDTH, HEIGHT, FPS = 1280, 720, 30
SPEAK_EVERY, SPEAK_FOR = 15.0, 4.0
GOALS = {
    "copy_wall_s": "<= 15 for 10 minutes of 720p30 (the video copied; only the sound is encoded)",
    "segments_wall_s": "<= 15 (the same, joined from segments)",
    "burn_x_realtime": ">= 1 (re-encoding at veryfast: a session exports no slower than it lasted)",
}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=3600)


def make_source(path: Path, seconds: float) -> None:
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=300:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", str(2 * FPS), "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-ac", "2", "-shortest", str(path),
    )  # fmt: skip


def make_session(folder: Path, source: Path, seconds: float, video: list[str] | None = None) -> None:
    """Subtitles and a narration for ``seconds`` of media, and session.json (a file camera, or ``video`` kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict = {"srt": "subtitles.srt", "vtt": "subtitles.vtt", "narration": "narration.ogg"}
    t = np.arange(round(SPEAK_FOR * RATE)) / RATE
    speech = (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)
    narration = NarrationFile(folder / files["narration"])
    subtitles = SubtitleFiles(folder / files["srt"], folder / files["vtt"])
    at = 1.0
    while at + SPEAK_FOR < seconds:
        narration.add(at, speech)
        subtitles.write(Cue(at, at + SPEAK_FOR, ("Someone crosses the yard", f"at {at:.0f} seconds.")))
        at += SPEAK_EVERY
    narration.fill_to(seconds)
    narration.close()
    subtitles.close()
    kind = "file"
    if video is not None:
        files["video"], kind = video, "stream"
    camera = CameraMeta(
        id="bench", name="bench", source=str(source), kind=kind, profile="default", preset="balanced",
        instructions="", backend="opencv", speaks=True, files=files,
    )  # fmt: skip
    write_meta(folder, SessionMeta(id=folder.name, started=0.0, interrupted=False, cameras=[camera]))


def timed_export(folder: Path, out: Path, burn: bool = False) -> dict[str, object]:
    began = time.monotonic()
    result = export_session(folder, out, burn_subtitles=burn)
    wall = time.monotonic() - began
    with av.open(str(out)) as container:
        length = container.duration / av.time_base if container.duration else 0.0
    return {
        "wall_s": round(wall, 2),
        "x_realtime": round(result.duration / wall, 1),
        "mp4_mb": round(out.stat().st_size / 1e6, 1),
        "mp4_s": round(length, 2),
        "tracks": result.tracks,
        "notes": result.notes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--no-burn", action="store_true", help="skip the re-encoding export (the slow one)")
    args = parser.parse_args()
    seconds = args.minutes * 60
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True).stdout
    results: dict[str, object] = {
        "session": f"{args.minutes:g} min, {WIDTH}x{HEIGHT}@{FPS}",
        "cpus": os.cpu_count(),
        "ffmpeg": version.splitlines()[0].split(" Copyright")[0],
    }
    with tempfile.TemporaryDirectory(prefix="onlooker-bench-export-") as tmp:
        work = Path(tmp)
        source = work / "source.mp4"
        began = time.monotonic()
        make_source(source, seconds)
        results["make_source_s"] = round(time.monotonic() - began, 1)
        results["source_mb"] = round(source.stat().st_size / 1e6, 1)
        began = time.monotonic()
        make_session(work / "file-session", source, seconds)
        results["make_narration_s"] = round(time.monotonic() - began, 1)
        results["narration_mb"] = round((work / "file-session" / "narration.ogg").stat().st_size / 1e6, 2)

        results["copy"] = timed_export(work / "file-session", work / "copy.mp4")

        segmented = work / "segment-session"
        segmented.mkdir()
        ffmpeg("-i", str(source), "-map", "0:v", "-c", "copy", "-f", "segment", "-segment_time", "60",
               str(segmented / "video-%04d.ts"))  # fmt: skip
        names = sorted(p.name for p in segmented.glob("video-*.ts"))
        make_session(segmented, source, seconds, video=names)
        results["segments"] = {"count": len(names), **timed_export(segmented, work / "segments.mp4")}

        if not args.no_burn:
            results["burn"] = timed_export(work / "file-session", work / "burn.mp4", burn=True)
    report("export", results, GOALS)


if __name__ == "__main__":
    main()
