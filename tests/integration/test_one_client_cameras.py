"""Cameras that serve one client at a time: an http:// URL is sniffed on the connection that then
streams it, at Start and after every reconnect. Real servers on loopback: FFmpeg's own
``-f mpjpeg -listen 1`` (one client, then it exits) and ``OneClientCamera`` (one at a time)."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.sources.base import Source
from pipeline.sources.resolve import open_source
from tests.helpers.mjpeg_server import FfmpegServer, free_port
from tests.helpers.one_client_camera import OneClientCamera

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ffmpeg_camera(tmp_path: Path) -> Iterator[FfmpegServer]:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs /proc/net/tcp to see when ffmpeg listens")
    server = FfmpegServer(tmp_path / "ffmpeg.log")  # application/octet-stream, as FFmpeg sends by default
    try:
        server.wait_listening()
        yield server
    finally:
        server.close()


def first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first line the process prints to stdout, waited for with a deadline."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        assert selector.select(timeout), f"nothing on stdout within {timeout} s"
    return proc.stdout.readline()


def test_headless_app_comments_on_ffmpeg_one_client_camera(ffmpeg_camera: FfmpegServer, tmp_path: Path) -> None:
    """The user's path: ``app.py --headless --source URL`` against ``ffmpeg -f mpjpeg -listen 1``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONLOOKER_")}
    notes = (tmp_path / "stderr.txt").open("w+")
    cmd = [sys.executable, str(ROOT / "app.py"), "--headless", "--backend", "opencv", "--source", ffmpeg_camera.url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=notes, text=True, cwd=tmp_path, env=env)
    try:
        comment = first_line(proc, timeout=60)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notes.seek(0)
        stderr = notes.read()
        notes.close()
    assert comment.startswith("[00:"), (comment, stderr)
    assert "· source live: 320x240" in stderr and "connection refused" not in stderr, stderr


class States:
    """A source's statuses, waited on with a condition."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.seen: list[tuple[str, str]] = []

    def __call__(self, state: str, detail: str) -> None:
        with self.cond:
            self.seen.append((state, detail))
            self.cond.notify_all()

    def wait_count(self, state: str, count: int, timeout: float = 20) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: [s for s, _ in self.seen].count(state) >= count, timeout)
        assert ok, f"no {count}x {state!r} within {timeout} s: {self.seen}"


@pytest.fixture
def one_client_camera() -> Iterator[OneClientCamera]:
    camera = OneClientCamera(free_port(), frames_per_client=15)  # 1.5 s of video, then the stream drops
    try:
        camera.wait_listening()
        yield camera
    finally:
        camera.close()


def test_one_client_camera_is_live_at_start_and_again_after_the_stream_drops(one_client_camera) -> None:
    camera = one_client_camera
    source = open_source(camera.url, timeout=5)
    states = States()
    source.start(lambda frame: None, states)
    try:
        states.wait_count("live", 2)  # at Start, and back after the drop
    finally:
        source.stop()
    assert not source.running
    kinds = [state for state, _ in states.seen]
    assert kinds[:3] == ["connecting", "live", "reconnecting"] and "failed" not in kinds, states.seen
    assert states.seen[1] == ("live", "64x48")
    live_again = [detail for state, detail in states.seen if state == "live"][1]
    assert live_again.startswith("back after"), states.seen
    assert source.kind == "mjpeg"
    assert camera.clients == 2  # one connection per attempt: nothing spent on sniffing


def test_stop_cuts_a_url_source_reading_a_silent_camera(one_client_camera) -> None:
    """Stop is prompt on the connection UrlSource sniffed on, not only on MjpegSource's own."""
    camera = one_client_camera
    camera.interval = 60  # one frame, then a long silence
    source = open_source(camera.url, timeout=30)
    states = States()
    source.start(lambda frame: None, states)
    states.wait_count("live", 1)
    started = time.monotonic()
    source.stop(timeout=5)
    assert time.monotonic() - started < 2 and not source.running
    assert states.seen[-1] == ("ended", "stopped")


class _Idle(Source):
    def frames(self, stop: threading.Event) -> Iterator:
        yield from ()


def test_a_state_change_is_checked_and_made_at_once() -> None:
    """What the watchdog relies on: its "stalled" never lands on the reader's newer "failed"."""
    source = _Idle("x")
    reported: list[str] = []
    source.start(lambda frame: None, lambda state, detail: reported.append(state))
    assert source.join(5)
    assert reported == ["connecting", "failed"]
    assert not source.report_if("live", "stalled")
    assert source.report_if("failed", "ended")
    assert reported == ["connecting", "failed", "ended"] and source.state == "ended"
