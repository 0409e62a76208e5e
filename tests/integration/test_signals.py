"""Stops that lose nothing: SIGTERM (``docker stop``, systemd) and SIGINT sent to the real app, run as a user runs
it (a subprocess, the offline narrator, espeak-ng), and what it leaves on disk read back.

A container gets ``STOP_TIMEOUT`` seconds between SIGTERM and SIGKILL, so every stop is timed against it. Waits
poll what the app writes (its events file, its recording, its stderr) against a deadline; nothing sleeps to
synchronise.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import stat
import subprocess
import sys
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pysubs2
import pytest
from gradio_client import handle_file

from pipeline.recording.folder import read_meta
from pipeline.recording.history import HistoryIndex
from tests.helpers.browser import AppServer
from tests.helpers.media import Segment, write_video
from tests.integration.test_webui_wiring import health, open_tab, read_until

ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT = 10.0  # docker stop's default grace before SIGKILL
START_TIMEOUT = 90.0


def wait_for(
    check: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], timeout: float = START_TIMEOUT
) -> None:
    """Poll ``check`` until it holds; fail at once if the app exited first, or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"the app exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.02)


def logged(events: Path, kind: str) -> Callable[[], bool]:
    """The events file has an event of this type (``commentary_end``: the recording has a comment in it)."""
    return lambda: events.exists() and f'"type": "{kind}"' in events.read_text()


def only_folder(record_dir: Path) -> Path:
    folders = [p for p in record_dir.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def indexed_as_finished(folder: Path) -> bool:
    """The History's index has the session as ended: the recorder's last step (it is listed, as interrupted, from
    its start)."""
    with HistoryIndex(folder.parent) as index:
        row = index.session(folder.name)
    return row is not None and not row.interrupted


def assert_finished(folder: Path) -> None:
    """The recording was ended, not cut: ``session.json`` and the History's index both say so, and the subtitles
    and the narration were closed."""
    meta = read_meta(folder)
    assert not meta.interrupted and meta.ended is not None and meta.comments >= 1
    camera = meta.cameras[0]
    assert pysubs2.load(str(folder / camera.files["srt"])).events  # the comments were timed and written out
    assert (folder / camera.files["narration"]).stat().st_size > 0
    assert indexed_as_finished(folder)


def read_until_exit(fifo: Path, proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """Everything written into ``fifo`` until ``proc`` exits. Opened without blocking, so a process that never
    opens its end fails the test instead of hanging it (a blocking open would wait for a writer forever)."""
    descriptor = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                chunk = os.read(descriptor, 1 << 16)
            except BlockingIOError:  # the writer has it open and has not written more yet
                chunk = None
            if chunk:
                chunks.append(chunk)
            elif proc.poll() is not None:  # exited and every byte it wrote was read
                return b"".join(chunks)
            elif time.monotonic() > deadline:
                raise AssertionError(f"the app did not exit within {timeout:.0f} s")
            else:
                time.sleep(0.01)
    finally:
        os.close(descriptor)


@pytest.fixture(scope="module")
def looping_video(media_dir: Path) -> Path:
    """Motion, then a cut to a still scene: the offline narrator comments within the first seconds."""
    return write_video(media_dir / "signals.mp4", [Segment(3, 0, moving=True), Segment(3, 2)])


@dataclass
class Headless:
    """``app.py --headless`` (with ``--loop`` it never ends by itself), recording, with its narration and events
    files."""

    proc: subprocess.Popen[bytes]
    record_dir: Path
    wav: Path
    events: Path
    notes: Path

    def stderr(self) -> str:
        return self.notes.read_text()


@contextlib.contextmanager
def headless(video: Path, tmp_path: Path, wav: Path | None = None, loop: bool = True) -> Iterator[Headless]:
    """The headless app past its first spoken comment; killed at the end if the test did not end it."""
    record_dir, events, notes = tmp_path / "sessions", tmp_path / "ev.jsonl", tmp_path / "err"
    wav = wav or tmp_path / "narration.wav"
    command = [
        sys.executable, str(ROOT / "app.py"), "--headless", "--backend", "opencv", "--tts", "espeak",
        "--source", str(video), "--record-dir", str(record_dir), "--audio-out", str(wav), "--events", str(events),
        *(["--loop"] if loop else []),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONLOOKER_")}
    with notes.open("wb") as stderr:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=tmp_path)
    try:
        wait_for(logged(events, "speech_end"), "its first spoken comment", proc)
        yield Headless(proc, record_dir, wav, events, notes)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_finishes_the_headless_run_and_exits_zero(
    looping_video: Path, tmp_path: Path, sent: signal.Signals
) -> None:
    with headless(looping_video, tmp_path) as run:
        run.proc.send_signal(sent)
        assert run.proc.wait(STOP_TIMEOUT) == 0, run.stderr()
    notes = run.stderr()
    assert f"· stopped ({sent.name})" in notes and "Traceback" not in notes, notes
    assert_finished(only_folder(run.record_dir))
    with wave.open(str(run.wav)) as narration:  # --audio-out was written, whole, with what was said in it
        rate, samples = narration.getframerate(), np.frombuffer(narration.readframes(narration.getnframes()), np.int16)
    assert rate > 0 and np.abs(samples).max() > 1000
    assert "· narration:" in notes and "· recorded:" in notes


def test_a_second_signal_while_stopping_quits_at_once(looping_video: Path, tmp_path: Path) -> None:
    """``--audio-out`` into a FIFO that nobody reads holds the stop where it saves the narration, after the
    recording was finished, for as long as the test likes; a second signal there ends the process at once."""
    fifo = tmp_path / "narration.wav"
    os.mkfifo(fifo)
    with headless(looping_video, tmp_path, wav=fifo) as run:
        run.proc.send_signal(signal.SIGTERM)
        finished = lambda: indexed_as_finished(only_folder(run.record_dir))  # noqa: E731
        wait_for(finished, "the recording was finished", run.proc, STOP_TIMEOUT)  # and it still runs
        started = time.monotonic()
        run.proc.send_signal(signal.SIGINT)
        assert run.proc.wait(STOP_TIMEOUT) == 128 + signal.SIGINT, run.stderr()
        assert time.monotonic() - started < 2.0
    notes = run.stderr()
    assert "· stopped (SIGTERM)" in notes and "· SIGINT while stopping: quitting now" in notes, notes
    assert stat.S_ISFIFO(fifo.stat().st_mode) and "· narration:" not in notes  # it did not wait for a reader
    assert_finished(only_folder(run.record_dir))


def test_a_signal_while_a_run_that_ended_cleans_up_loses_nothing(looping_video: Path, tmp_path: Path) -> None:
    """The video ends on its own and the run is saving the narration (into a FIFO, so it waits for the test) when
    SIGTERM comes: stopping is already under way, so the signal must not cut it short; the WAV is written whole."""
    fifo = tmp_path / "narration.wav"
    os.mkfifo(fifo)
    with headless(looping_video, tmp_path, wav=fifo, loop=False) as run:
        ended = lambda: indexed_as_finished(only_folder(run.record_dir))  # noqa: E731
        wait_for(ended, "the video ended and its recording was finished", run.proc)
        run.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "SIGTERM" in run.stderr(), "the signal was heard", run.proc, STOP_TIMEOUT)
        saved = read_until_exit(fifo, run.proc, STOP_TIMEOUT)
        assert run.proc.returncode == 0 and saved, run.stderr()
    with wave.open(io.BytesIO(saved)) as narration:
        assert narration.getnframes() / narration.getframerate() > 5.5  # the whole 6 s video's narration
    notes = run.stderr()
    assert "· narration:" in notes and "Traceback" not in notes, notes


def test_sigterm_closes_every_web_session_then_exits_zero(looping_video: Path, tmp_path: Path) -> None:
    """A tab's session running and recording in the web app: SIGTERM stops it as its Stop button would (the page
    is told, while the server still answers), finishes the recording, and the process exits 0 in time."""
    record_dir = tmp_path / "sessions"
    server = AppServer(args=["--tts", "espeak", "--backend", "opencv", "--record-dir", str(record_dir)])
    with server as url:
        client, socket = open_tab(url)
        with socket:
            client.predict("Upload", handle_file(str(looping_video)), "", "sports", "sniper", api_name="/start")
            assert health(url)["sessions"] == 1
            assert server.proc is not None
            recorded = lambda: any(logged(f, "commentary_end")() for f in record_dir.glob("*/events.jsonl"))  # noqa: E731
            wait_for(recorded, "a recorded comment", server.proc)
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            read_until(socket, lambda m: isinstance(m, dict) and m["type"] == "stopped", timeout=STOP_TIMEOUT)
            assert server.proc.wait(STOP_TIMEOUT) == 0, server.output()[1]
            assert time.monotonic() - started < STOP_TIMEOUT
    notes = server.output()[1]
    assert "· stopped (SIGTERM)" in notes and "Traceback" not in notes, notes
    assert_finished(only_folder(record_dir))


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_web_app_with_no_session_stops_with_exit_zero(sent: signal.Signals) -> None:
    server = AppServer(args=["--backend", "opencv"])
    with server as url:
        assert health(url)["sessions"] == 0
        assert server.proc is not None
        server.proc.send_signal(sent)
        assert server.proc.wait(STOP_TIMEOUT) == 0, server.output()[1]
    notes = server.output()[1]
    assert f"· stopped ({sent.name})" in notes and "Traceback" not in notes, notes
