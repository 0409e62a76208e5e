"""Live-source benchmark: source lag at 720p30 for RTSP and MJPEG, reconnect time, CPU per stream.

Source lag is frame captured by the camera → frame handed to the hub, read from the capture clock
each test camera draws into its pictures (``tests/helpers/camera_clock.py``): the RTSP camera is GStreamer's
RTSP server (``tests/helpers/rtsp_camera.py --clock``), the MJPEG camera a separate Python process that
JPEG-encodes each frame the moment it draws it. Reconnect time is how long after the camera is
back (or after the source's next scheduled try, whichever is later) the first frame arrives. CPU is
this process's while only the source runs (reader thread, FFmpeg's decoder threads, colour
conversion), per second of stream, in % of one core.

    python bench/sources.py [--seconds 10] [--reconnects 3]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import report, summary  # first: puts the repository and tests/ on sys.path

# isort: split
from pipeline.frames import Frame
from pipeline.sources.base import Source
from pipeline.sources.mjpeg import MjpegSource
from pipeline.sources.stream import StreamSource
from tests.helpers.camera_clock import draw_clock, read_clock
from tests.helpers.mjpeg_server import Handler, MjpegTestServer, free_port, multipart
from tests.helpers.stream_servers import ServerProcess, rtsp_camera, rtsp_camera_available

WIDTH, HEIGHT, FPS = 1280, 720, 30
GOALS = {
    "lag_median_ms": "<= 100 (RTSP and MJPEG, 720p30, loopback)",
    "reconnect_beyond_backoff_s": "<= 2",
}


def measure(source: Source, seconds: float, clock: bool = True) -> dict[str, object]:
    """Run ``source`` for ``seconds`` after its first frame; lag (``clock``: the camera draws its
    capture time) and CPU of its reader thread."""
    lags: list[float] = []
    rtcp: list[float] = []
    first = threading.Event()
    end = threading.Event()
    states: list[str] = []

    def on_frame(frame: Frame) -> None:
        lags.append((frame.wall_time - read_clock(frame.image)) * 1000 if clock else 0.0)
        if frame.capture_time is not None:
            rtcp.append((frame.wall_time - frame.capture_time) * 1000)
        first.set()

    def on_status(state: str, detail: str) -> None:
        states.append(f"{state} {detail}")
        if state in ("failed", "ended"):
            first.set()
            end.set()

    source.start(on_frame, on_status)
    try:
        if not first.wait(30) or end.is_set():
            raise SystemExit(f"{source.display_name}: no frames: {states}")
        lags.clear()
        rtcp.clear()
        cpu_before, wall_before = time.process_time(), time.monotonic()
        end.wait(seconds)  # this thread sleeps: the process's CPU is the reader's and FFmpeg's decoder threads
        cpu = time.process_time() - cpu_before
        elapsed = time.monotonic() - wall_before
    finally:
        source.stop()
    return {
        "lag_ms": summary(lags) if clock else "n/a (no clock drawn)",
        "lag_from_rtcp_ms": summary(rtcp) if rtcp else "n/a (no capture clock in the stream)",
        "fps": round(len(lags) / elapsed, 1),
        "cpu_percent_of_one_core": round(100 * cpu / elapsed, 1),
    }


def serve_clock_mjpeg(port: int) -> None:
    """The MJPEG clock camera (run in its own process): draw the time, encode, send, 30 times a second."""
    import cv2
    import numpy as np

    def route(handler: Handler) -> None:
        handler.start_stream("multipart/x-mixed-replace; boundary=frame")
        period = 1 / FPS
        while True:
            time.sleep(period - time.time() % period)
            picture = np.full((HEIGHT, WIDTH), 128, np.uint8)
            draw_clock(picture, int(time.time() * 1000))
            _, jpeg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 80])
            handler.wfile.write(multipart([jpeg.tobytes()]))
            handler.wfile.flush()

    server = MjpegTestServer(port)
    server.routes["/video.mjpg"] = route
    threading.Event().wait()  # serve until killed


def mjpeg_camera(log: Path) -> tuple[ServerProcess, str]:
    port = free_port()
    cmd = [sys.executable, __file__, "--serve-mjpeg", str(port)]
    return ServerProcess(cmd, log, port=port), f"http://127.0.0.1:{port}/video.mjpg"


def reconnect_times(camera: ServerProcess, url: str, rounds: int) -> list[float]:
    """Kill the camera, bring it back, and time the first frame after max(camera ready, next try)."""
    events: list[tuple[float, str, str]] = []
    changed = threading.Condition()

    def on_status(state: str, detail: str) -> None:
        with changed:
            events.append((time.monotonic(), state, detail))
            changed.notify_all()

    def wait_for(state: str, after: int) -> tuple[float, str]:
        with changed:
            assert changed.wait_for(lambda: any(e[1] == state for e in events[after:]), 60), events
            return next((t, d) for t, s, d in events[after:] if s == state)

    source = StreamSource(url, timeout=3)
    source.start(lambda frame: None, on_status)
    results = []
    try:
        wait_for("live", 0)
        for _ in range(rounds):
            mark = len(events)
            camera.kill()
            wait_for("reconnecting", mark)
            camera.start()
            ready = time.monotonic()
            back, _ = wait_for("live", mark)
            with changed:
                tries = [t + float(m.group(1)) for t, s, d in events[mark:] if s == "reconnecting" and t < back
                         for m in [re.search(r"in ([\d.]+) s$", d)] if m]  # fmt: skip
            scheduled = max(t for t in tries if t <= back)  # the try that succeeded
            results.append(round(back - max(ready, scheduled), 3))
    finally:
        source.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--reconnects", type=int, default=3)
    parser.add_argument("--serve-mjpeg", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_mjpeg:
        serve_clock_mjpeg(args.serve_mjpeg)
        return
    if not rtsp_camera_available():
        raise SystemExit("GStreamer's RTSP server is missing: run scripts/setup.sh --dev")
    logs = Path(tempfile.mkdtemp(prefix="onlooker-bench-"))
    results: dict[str, object] = {"size": f"{WIDTH}x{HEIGHT}@{FPS}", "cpus": os.cpu_count()}
    camera, url = rtsp_camera(logs / "rtsp.log", size=f"{WIDTH}x{HEIGHT}", fps=FPS, extra=("--clock",))
    mjpeg, mjpeg_url = mjpeg_camera(logs / "mjpeg.log")
    # The clock picture is flat grey and cheap to decode; a moving test pattern shows the CPU of real video.
    moving, moving_url = rtsp_camera(logs / "moving.log", size=f"{WIDTH}x{HEIGHT}", fps=FPS)
    try:
        moving.start()
        results["rtsp_tcp_moving_pattern"] = measure(StreamSource(moving_url), args.seconds, clock=False)
        moving.close()
        camera.start()
        mjpeg.start()
        for transport in ("tcp", "udp"):
            results[f"rtsp_{transport}"] = measure(StreamSource(url, rtsp_transport=transport), args.seconds)
        results["mjpeg"] = measure(MjpegSource(mjpeg_url), args.seconds)
        results["reconnect_beyond_backoff_s"] = summary(reconnect_times(camera, url, args.reconnects))
    finally:
        for server in (moving, camera, mjpeg):
            server.close()
    report("sources", results, GOALS)


if __name__ == "__main__":
    main()
