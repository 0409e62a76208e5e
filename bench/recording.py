"""What keeping the source video costs: CPU and disk per hour for a 720p30 RTSP camera (remuxed) and a
720p30 webcam (encoded with libx264 veryfast).

The RTSP camera is GStreamer's server on loopback (tests/helpers/rtsp_camera.py, x264 at 4 Mbit/s): the
real StreamSource reads it for ``--seconds`` twice, without and with the recorder's video tap, and the
difference in process CPU time is the remux's cost. The webcam: 720p frames that change every time, fed at
30 a second as the page sends them, encoded by the recorder's VideoRecorder. Disk per hour is the bytes
written scaled to an hour.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from common import report

from pipeline.recording.video import VideoRecorder
from pipeline.sources.stream import StreamSource
from tests.helpers.media import scene_background
from tests.helpers.stream_servers import rtsp_camera, rtsp_camera_available


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def read_camera(url: str, seconds: float, video: VideoRecorder | None) -> tuple[float, int]:
    """CPU seconds this process spent reading (and keeping) the camera for ``seconds``, and frames read."""
    source = StreamSource(url)
    source.video_tap = video
    frames = 0

    def on_frame(_frame: object) -> None:
        nonlocal frames
        frames += 1

    stop = threading.Event()

    def writer() -> None:  # the recorder's thread, writing what was queued every half second
        while not stop.wait(0.5):
            if video is not None:
                video.write()

    thread = threading.Thread(target=writer, name="bench-writer")
    cpu = time.process_time()
    source.start(on_frame, lambda state, detail: None)
    thread.start()
    time.sleep(seconds)  # the bench's clock: the camera runs in real time
    source.stop()
    stop.set()
    thread.join()
    if video is not None:
        video.close()
    return time.process_time() - cpu, frames


def rtsp(seconds: float, tmp: Path) -> dict[str, float]:
    server, url = rtsp_camera(tmp / "camera.log", size="1280x720", fps=30)
    server.start()
    try:
        base_cpu, base_frames = read_camera(url, seconds, None)
        folder = tmp / "rtsp"
        folder.mkdir()
        kept = VideoRecorder(folder, "video", lambda name: None)
        cpu, frames = read_camera(url, seconds, kept)
    finally:
        server.close()
    return {
        "read only: % of one core": round(100 * base_cpu / seconds, 1),
        "read and remux: % of one core": round(100 * cpu / seconds, 1),
        "remux's own cost: % of one core": round(100 * (cpu - base_cpu) / seconds, 1),
        "frames read (without / with)": f"{base_frames} / {frames}",
        "frames kept": kept.stats.written,
        "disk per hour (GB)": round(folder_bytes(folder) / seconds * 3600 / 1e9, 2),
    }


def webcam(seconds: float, tmp: Path) -> dict[str, float]:
    folder = tmp / "webcam"
    folder.mkdir()
    video = VideoRecorder(folder, "video", lambda name: None)
    base = scene_background(0, 1280, 720)
    frames = int(seconds * 30)
    cpu = 0.0
    for k in range(frames):
        image = base.copy()  # a textured scene with a block moving across it, as a camera shows a person
        x = (k * 12) % 1100
        image[200:520, x : x + 180] = (230, 200, 40)
        video.image(image, k / 30)
        if k % 15 == 14:  # the recorder writes every half second
            started = time.process_time()
            video.write()
            cpu += time.process_time() - started
    started = time.process_time()
    video.close()
    cpu += time.process_time() - started
    return {
        "encode: % of one core at 30 fps": round(100 * cpu / seconds, 1),
        "frames kept": video.stats.written,
        "disk per hour (GB)": round(folder_bytes(folder) / seconds * 3600 / 1e9, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each camera is recorded")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if rtsp_camera_available():
            results["RTSP camera 1280x720 30 fps, remuxed"] = rtsp(args.seconds, Path(tmp))
        results["webcam 1280x720 30 fps, encoded (libx264 veryfast)"] = webcam(args.seconds, Path(tmp))
    report("recording", results, {"remux": "a few % of one core", "encode": "< 100 % of one core at 720p30"})


if __name__ == "__main__":
    main()
