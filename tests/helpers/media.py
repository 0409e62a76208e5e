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

PACE = 1.3  # seconds a pacing square takes there and back


@dataclass(frozen=True)
class Segment:
    seconds: float
    scene: int  # which background (different scenes look clearly different)
    moving: bool = False
    area: tuple[float, float] | None = None  # set: the square paces to and fro in this part of the width (fractions)


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
                if seg.area is None:
                    x = int((width - side) * (i / max(count - 1, 1)))
                else:  # there and back every PACE seconds, like someone pacing (never in step with a 1 fps capture)
                    left, right = int(width * seg.area[0]), int(width * seg.area[1]) - side
                    x = left + int((right - left) * abs(((i / fps) % PACE) / PACE * 2 - 1))
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


def run_ffmpeg(*args: str | Path) -> None:
    """Run the ffmpeg CLI quietly, overwriting its output; raise when it fails."""
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *map(str, args)], check=True, timeout=120)


def write_audio_only(path: Path, seconds: float = 2.0) -> Path:
    """An audio-only file (sine tone), for the 'no video stream' error."""
    run_ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", path)
    return path


H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


def write_quadrant(path: Path, width: int, height: int, frames: int = 2, codec: tuple[str, ...] = H264) -> Path:
    """Black frames with the top-left quarter white: where that quarter ends up shows how a picture was
    scaled, cropped or turned."""
    graph = f"color=c=black:s={width}x{height}:r=5,drawbox=x=0:y=0:w=iw/2:h=ih/2:color=white:t=fill"
    run_ffmpeg("-f", "lavfi", "-i", graph, "-frames:v", str(frames), *codec, path)
    return path


def write_vfr(path: Path) -> Path:
    """A variable-frame-rate clip: 1 s at 10 fps, then 1 s at 30 fps, timestamps kept as they are."""
    run_ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=160x90:rate=10:duration=1",
        "-f", "lavfi", "-i", "testsrc=size=160x90:rate=30:duration=1",
        "-filter_complex", "[0][1]concat=n=2:v=1", "-vsync", "vfr", *H264, path,
    )  # fmt: skip
    return path


def faststart(source: Path, path: Path) -> Path:
    """``source`` remuxed with its index (moov atom) in front, as for progressive download."""
    run_ffmpeg("-i", source, "-c", "copy", "-movflags", "+faststart", path)
    return path


def truncated(source: Path, path: Path, keep: float = 0.5) -> Path:
    """The first ``keep`` of ``source``'s bytes: an interrupted copy or download."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def top_level_boxes(path: Path) -> list[str]:
    """The MP4's top-level box types in file order (``moov`` before ``mdat`` means faststart)."""
    data = path.read_bytes()
    boxes, at = [], 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        boxes.append(data[at + 4 : at + 8].decode("latin-1"))
        if size == 1:  # 64-bit size follows the type
            size = int.from_bytes(data[at + 8 : at + 16], "big")
        if size < 8:
            break
        at += size
    return boxes


def rotate_like_a_phone(path: Path, degrees: int) -> Path:
    """Set the MP4 video track's display matrix to turn the picture ``degrees`` clockwise, as phones store
    portrait video: the pixels stay as the sensor saw them and players turn them (tkhd's matrix)."""
    data = bytearray(path.read_bytes())
    box = data.index(b"tkhd")  # the first (only) track: the video
    matrix_at = box + 8 + (32 if data[box + 4] == 1 else 20) + 16  # after version/flags, times, layer, volume
    width, height = (int.from_bytes(data[at : at + 4], "big") >> 16 for at in (matrix_at + 36, matrix_at + 40))
    cos, sin = {0: (1, 0), 90: (0, 1), 180: (-1, 0), 270: (0, -1)}[degrees % 360]
    # x' = a·x + c·y + tx, y' = b·x + d·y + ty (y down); the translation keeps the picture at the origin
    corners = [(x * cos - y * sin, x * sin + y * cos) for x in (0, width) for y in (0, height)]
    tx, ty = -min(x for x, _ in corners), -min(y for _, y in corners)
    fixed = [cos, sin, 0, -sin, cos, 0, tx, ty]
    values = [v << 16 for v in fixed] + [1 << 30]  # 16.16 fixed point; u, v and w are 2.30 (u = v = 0)
    data[matrix_at : matrix_at + 36] = b"".join(v.to_bytes(4, "big", signed=True) for v in values)
    path.write_bytes(data)
    return path
