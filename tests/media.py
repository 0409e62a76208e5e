"""Test videos with known content, written by real FFmpeg from frames we draw.

Each video is a list of segments; a segment boundary is a hard cut to a different scene, and a
segment is either static or has a square moving across it, so tests know exactly when cuts
happen and when the picture is still.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Segment:
    seconds: float
    scene: int  # which background (different scenes look clearly different)
    moving: bool = False


def scene_background(scene: int, width: int, height: int) -> np.ndarray:
    """A distinct, textured background per scene number (colour tint and pattern differ)."""
    rng = np.random.default_rng(1000 + scene)
    tint = rng.integers(30, 226, size=3)
    cells = rng.integers(-60, 60, size=(9, 16, 1))
    pattern = np.kron(cells, np.ones((height // 9 + 1, width // 16 + 1, 1)))[:height, :width]
    return np.clip(tint[None, None, :] + pattern, 0, 255).astype(np.uint8)


def render_frames(segments: list[Segment], fps: int, width: int, height: int):
    """Yield RGB frames for the segments, in order."""
    for seg in segments:
        background = scene_background(seg.scene, width, height)
        count = round(seg.seconds * fps)
        side = height // 4
        for i in range(count):
            frame = background.copy()
            if seg.moving:
                x = int((width - side) * (i / max(count - 1, 1)))
                y = height // 2 - side // 2
                frame[y : y + side, x : x + side] = (250, 250, 250)
            yield frame


def cut_times(segments: list[Segment], fps: int) -> list[float]:
    """Media times of the first frame after each hard cut (segments are whole frames long)."""
    times, frames = [], 0
    for prev, seg in itertools.pairwise(segments):
        frames += round(prev.seconds * fps)
        if seg.scene != prev.scene:
            times.append(frames / fps)
    return times


def write_video(path: Path, segments: list[Segment], fps: int = 15, width: int = 320, height: int = 180) -> Path:
    """Encode the segments with the ffmpeg CLI (H.264 in MP4 unless the suffix says otherwise)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg is not installed; run the project's set-up (scripts/setup.sh)")
    cmd = [
        ffmpeg,
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-r",
        str(fps),
        "-i",
        "-",
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(fps),
    ]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast"] if path.suffix in (".mp4", ".mkv") else []
    proc = subprocess.Popen([*cmd, str(path)], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for frame in render_frames(segments, fps, width, height):
        proc.stdin.write(frame.tobytes())
    proc.stdin.close()
    if proc.wait(timeout=120) != 0:
        raise RuntimeError(f"ffmpeg failed writing {path}")
    return path


def write_audio_only(path: Path, seconds: float = 2.0) -> Path:
    """An audio-only file (sine tone), for the 'no video stream' error."""
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds}",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path
