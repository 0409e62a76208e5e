"""The source video kept with a session, as a user runs it: the headless CLI on a live RTSP camera (GStreamer's
server, x264) and on an MJPEG camera, both on loopback; the recordings read back with FFmpeg (PyAV)."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import pytest

from pipeline.recording.folder import read_meta
from tests.helpers.camera_clock import read_clock
from tests.helpers.mjpeg_server import Handler, MjpegTestServer, frame_jpeg, multipart
from tests.helpers.stream_servers import rtsp_camera, rtsp_camera_available
from tests.integration.test_recording import env, only_folder, running

ROOT = Path(__file__).resolve().parents[2]
FPS = 15


def record_until(source: str, record_dir: Path, cwd: Path, comments: int = 3) -> Path:
    """The CLI on ``source`` until it printed ``comments`` comments, then Ctrl-C: the session's folder."""
    args = [sys.executable, str(ROOT / "app.py"), "--headless", "--backend", "opencv", "--source", source]
    with running([*args, "--record-dir", str(record_dir)], cwd) as proc:
        assert proc.stdout is not None
        for _ in range(comments):
            line = proc.stdout.readline()
            assert line.startswith("["), (line, proc.stderr.read() if proc.poll() is not None else "")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    return only_folder(record_dir)


@pytest.fixture
def clock_camera(tmp_path: Path) -> Iterator[str]:
    if not rtsp_camera_available():
        pytest.skip("GStreamer's RTSP server is not installed (scripts/setup.sh --dev)")
    server, url = rtsp_camera(tmp_path / "camera.log", fps=FPS, size="640x360", extra=("--clock",))
    server.start()
    try:
        yield url
    finally:
        server.close()


def test_a_live_rtsp_camera_is_remuxed_packet_by_packet_on_the_media_timeline(
    clock_camera: str, tmp_path: Path
) -> None:
    folder = record_until(clock_camera, tmp_path / "sessions", tmp_path)
    camera = read_meta(folder).cameras[0]
    assert camera.kind == "stream" and camera.files["video"] == ["video-0001.ts"]
    path = folder / "video-0001.ts"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 640, 360)
        packets = [p for p in container.demux(stream) if p.size]
    # The camera's own bitstream, not ours: its sequence parameters say Baseline profile (x264 ultrafast, the
    # camera's), where the webcam encoder (veryfast) writes High.
    assert packets[0].is_keyframe and b"\x00\x00\x00\x01\x67\x42" in bytes(packets[0])  # SPS, profile_idc 66
    with av.open(str(path)) as container:
        frames = [(frame.time, read_clock(frame.to_ndarray(format="rgb24"))) for frame in container.decode(video=0)]
    assert len(frames) == len(packets) >= 2 * FPS  # every packet kept is a frame, seconds of them
    times, clocks = zip(*frames, strict=True)
    steps = [b - a for a, b in itertools.pairwise(clocks)]
    assert all(0 < step < 2.5 / FPS for step in steps), max(steps)  # no frame lost or repeated on the way
    assert abs(times[0]) < 0.05  # media time 0 is the first frame, as for the subtitles and the narration
    drift = [(t - times[0]) - (c - clocks[0]) for t, c in frames]
    assert max(map(abs, drift)) < 0.1  # the file's timeline is the camera's clock


def looping_jpegs(count: int, fps: float) -> Callable[[Handler], None]:
    def route(handler: Handler) -> None:
        handler.start_stream("multipart/x-mixed-replace; boundary=frame")
        k = 0
        while not handler.closing.is_set():
            handler.wfile.write(multipart([frame_jpeg(k % count)]))
            handler.wfile.flush()
            k += 1
            handler.closing.wait(1 / fps)

    return route


def test_an_mjpeg_camera_is_kept_as_the_jpegs_it_sent(tmp_path: Path) -> None:
    server = MjpegTestServer()
    server.routes["/cam.mjpg"] = looping_jpegs(50, FPS)
    try:
        folder = record_until(server.url("/cam.mjpg"), tmp_path / "sessions", tmp_path, comments=2)
    finally:
        server.close()
    camera = read_meta(folder).cameras[0]
    assert camera.kind in ("mjpeg", "url") and camera.files["video"] == ["video-0001.mkv"]
    sent = {frame_jpeg(k) for k in range(50)}
    with av.open(str(folder / "video-0001.mkv")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "mjpeg"
        kept = [bytes(p) for p in container.demux(stream) if p.size]
    assert len(kept) >= FPS and all(jpeg in sent for jpeg in kept)  # byte for byte what the camera sent


def test_a_session_on_a_file_keeps_no_copy_of_it(story_video: Path, tmp_path: Path) -> None:
    args = [sys.executable, str(ROOT / "app.py"), "--headless", "--backend", "opencv", "--source", str(story_video)]
    args += ["--record-dir", "r"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = only_folder(tmp_path / "r")
    assert "video" not in read_meta(folder).cameras[0].files and not list(folder.glob("video*"))
