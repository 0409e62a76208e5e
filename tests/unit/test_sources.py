"""Sources against real files, closed ports and pushed frames: frames, status, clear errors.

The same against a real HTTP server on loopback: ``tests/integration/test_http_sources.py``.
"""

from __future__ import annotations

import itertools
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import SourceError
from pipeline.frames import Frame
from pipeline.sources.file import FileSource
from pipeline.sources.resolve import open_source
from pipeline.sources.stream import StreamSource
from pipeline.sources.urls import mask_url
from pipeline.sources.webcam import PushSource
from tests.helpers.collector import Collector
from tests.helpers.media import write_audio_only


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- files -------------------------------------------------------------------------------------


def test_file_plays_all_frames_in_order_then_ends(short_video):
    source = FileSource(short_video, rate=4)
    got = Collector().run(source)
    assert [s for s, _ in got.states] == ["connecting", "live", "ended"]
    # 2 s at 15 FPS; a frame is only skipped when it is already late (a loaded machine), and counted
    assert len(got.frames) + source.stats.dropped_late == 30 and len(got.frames) >= 20
    times = [f.media_time for f in got.frames]
    assert times[0] == 0.0 and all(b > a for a, b in itertools.pairwise(times))
    # paced: no frame is handed on before its moment on the (4x faster) playback clock. The clock starts when
    # frame 0 is due; its stamp comes after its conversion to RGB, which a loaded machine can delay by tens of ms
    # (later frames then look early by as much): 50 ms of slack still fails an unpaced file by ~430 ms.
    start = got.frames[0].wall_time
    assert all(f.wall_time - start >= f.media_time / 4 - 0.05 for f in got.frames)
    assert got.frames[0].image.shape == (180, 320, 3) and got.frames[0].image.dtype == np.uint8


def test_looping_file_keeps_media_time_increasing(short_video):
    got = Collector(max_frames=75).run(FileSource(short_video, loop=True, rate=8))
    times = [f.media_time for f in got.frames]
    assert all(b > a for a, b in itertools.pairwise(times))
    assert times[-1] > 4.5  # went round more than twice


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.mp4", "file not found"),
        (lambda d: _write(d / "empty.mp4", b""), "the file is empty"),
        (lambda d: _write(d / "notes.mp4", b"just text\n" * 50), "not a video FFmpeg can read"),
        (lambda d: write_audio_only(d / "tone.m4a"), "has no video stream (contains audio)"),
        (lambda d: d, "is a folder"),
    ],
    ids=["missing", "empty", "text-as-mp4", "audio-only", "folder"],
)
def test_bad_files_fail_at_once_with_a_clear_message(tmp_path: Path, make, message):
    path = make(tmp_path)
    with pytest.raises(SourceError) as err:
        open_source(str(path))
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_scheme_is_rejected():
    with pytest.raises(SourceError, match="unsupported scheme 'gopher://'"):
        open_source("gopher://example/video")
    with pytest.raises(SourceError, match="no source given"):
        open_source("  ")


# --- network -----------------------------------------------------------------------------------


def test_connection_refused_is_reported_as_failed_status():
    port = free_port()
    for url in (f"http://127.0.0.1:{port}/cam", f"rtsp://127.0.0.1:{port}/live"):
        got = Collector().run(open_source(url, timeout=5))
        state, detail = got.states[-1]
        assert state == "failed" and "connection refused" in detail, detail


def test_credentials_are_masked_everywhere():
    url = "rtsp://admin:s3cret@127.0.0.1:1/stream"
    assert mask_url(url) == "rtsp://***@127.0.0.1:1/stream"
    source = StreamSource(url, timeout=2)
    assert "s3cret" not in source.display_name and "s3cret" not in source.source_id
    got = Collector().run(source)
    assert all("s3cret" not in detail for _, detail in got.states)


# --- webcam push -------------------------------------------------------------------------------


def test_push_source_hands_over_only_the_newest_frame():
    source = PushSource()
    got = Collector()
    taken = threading.Event()
    release = threading.Event()

    def slow_sink(frame: Frame) -> None:
        got.frame(frame)
        taken.set()
        release.wait(5)  # hold the pipeline while the browser pushes more

    source.start(slow_sink, got.status)
    source.push(np.full((4, 4, 3), 0, np.uint8))
    assert taken.wait(5)
    for value in (1, 2, 3):
        source.push(np.full((4, 4, 3), value, np.uint8))
    release.set()
    source.close()
    assert got.done.wait(5)
    source.stop()
    assert [int(f.image[0, 0, 0]) for f in got.frames] == [0, 3]
    assert source.replaced == 2 and got.states[-1][0] == "ended"


def test_a_silent_live_source_is_reported_stalled_then_live_again():
    from pipeline.config import Tuning
    from pipeline.events import SourceStatus
    from tests.helpers.scripted_backend import ScriptedBackend
    from tests.helpers.session_run import one_camera

    session = one_camera(ScriptedBackend(), tuning=Tuning(), stall_after=0.3)
    sub = session.bus.subscribe("test")
    source = PushSource()
    session.start(source)
    try:
        source.push(np.zeros((8, 8, 3), np.uint8))
        states = []
        for event in sub:
            if isinstance(event, SourceStatus):
                states.append(event.state)
                if event.state == "stalled":
                    source.push(np.zeros((8, 8, 3), np.uint8))
                elif states[-2:] == ["stalled", "live"]:
                    break
        assert states == ["connecting", "live", "stalled", "live"]
    finally:
        session.stop()
    assert not session.watchdog._thread.is_alive()
