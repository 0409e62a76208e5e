"""Sessions kept on disk, as a user gets them: the headless CLI as a subprocess, real files read back with
parsers that are not ours (pysubs2 for subtitles, FFmpeg through PyAV for the narration), a real
``kill -9``, a real full disk (a tiny tmpfs)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pysubs2
import pytest

from pipeline.recording.export import export_session
from pipeline.recording.folder import read_meta
from tests.helpers.media import Segment, write_video
from tests.unit.test_narration_file import decode, loudness

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "app.py"), "--headless", "--backend", "opencv", *args]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ONLOOKER_")}


def only_folder(record_dir: Path) -> Path:
    folders = [p for p in record_dir.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def events_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def moving_video(media_dir: Path) -> Path:
    """Motion, a cut, then a still scene: comments early on, then a long quiet stretch to listen to."""
    return write_video(media_dir / "recorded.mp4", [Segment(5, 0, moving=True), Segment(7, 2)])


def test_a_headless_run_is_kept_with_events_subtitles_and_narration(moving_video: Path, tmp_path: Path) -> None:
    record_dir, single = tmp_path / "sessions", tmp_path / "one.vtt"
    args = ["--source", str(moving_video), "--record-dir", str(record_dir), "--audio-out", str(tmp_path / "n.wav")]
    result = subprocess.run(
        cli(*args, "--subtitles", str(single)), capture_output=True, text=True, timeout=180, env=env(), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    folder = only_folder(record_dir)
    assert f"· recorded: {folder}" in result.stderr

    events = events_of(folder)
    assert events[0]["type"] == "camera_start" and events[0]["speaks"] is True
    kept = [e for e in events if e["type"] == "commentary_end" and not e["suppressed"] and e["text"].strip()]
    spoken = {e["comment_id"]: e for e in events if e["type"] == "speech_start"}
    assert len(kept) >= 2

    meta = read_meta(folder)
    assert not meta.interrupted and meta.ended and meta.ended >= meta.started
    assert meta.comments == len(kept) and meta.errors == 0
    camera = meta.cameras[0]
    assert (camera.source, camera.kind, camera.preset) == (str(moving_video), "file", "balanced")
    assert camera.speaks and camera.files["narration"] == "narration.ogg"
    assert abs(meta.duration - 12.0) < 0.5

    for name in ("subtitles.srt", "subtitles.vtt"):
        subs = pysubs2.load(str(folder / name))
        assert (
            " ".join(c.plaintext.replace("\n", " ") for c in subs).split() == " ".join(e["text"] for e in kept).split()
        )
        assert all(a.end <= b.start for a, b in itertools.pairwise(subs))  # never two at once
        starts = {round(spoken[e["comment_id"]]["at"] * 1000) for e in kept if e["comment_id"] in spoken}
        assert starts <= {c.start for c in subs}  # a spoken comment shows when its speech starts
    assert single.read_text() == (folder / "subtitles.vtt").read_text()  # --subtitles: the same cues, one file

    samples, rate = decode(folder / "narration.ogg")
    assert abs(len(samples) / rate - meta.duration) < 1.0  # the narration spans the session's media time
    first = pysubs2.load(str(folder / "subtitles.srt"))[0]
    assert loudness(samples, rate, first.start / 1000, first.end / 1000) > 0.01  # heard where the subtitle is
    quiet = silent_stretches(events, meta.duration)
    assert quiet, "no pause between two spoken comments to listen to"
    for start, end in quiet:
        assert loudness(samples, rate, start + 0.2, end - 0.2) < 0.002, (start, end)  # silent between comments


def silent_stretches(events: list[dict], until: float) -> list[tuple[float, float]]:
    """Media times from the end of one comment's speech to the next one's start (or the end), a second or more."""
    ends = [e["t"] for e in events if e["type"] == "speech_end"]
    starts = sorted(e["at"] for e in events if e["type"] == "speech_start")
    gaps = [(end, min((s for s in starts if s > end), default=until)) for end in ends]
    return [(a, b) for a, b in gaps if b - a >= 1.0]


@contextlib.contextmanager
def running(args: list[str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=cwd)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_kill_9_mid_session_leaves_a_readable_interrupted_recording(moving_video: Path, tmp_path: Path) -> None:
    record_dir = tmp_path / "sessions"
    args = ["--source", str(moving_video), "--loop", "--record-dir", str(record_dir), "--audio-out", "n.wav"]
    with running(cli(*args), tmp_path) as proc:
        assert proc.stdout is not None
        for _ in range(4):  # four comments printed: some spoken, some still being said
            assert proc.stdout.readline().startswith("[")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    folder = only_folder(record_dir)
    lines = (folder / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line written is whole
    assert sum(e["type"] == "commentary_end" for e in events) >= 3  # the last one printed may not be written yet
    meta = read_meta(folder)
    assert meta.interrupted and meta.ended is None
    said = [e["t"] for e in events if e["type"] == "speech_end"]
    assert said, "nothing was said before the kill"
    samples, rate = decode(folder / "narration.ogg")
    assert len(samples) / rate >= max(said) - 0.5  # everything said is readable, up to the last fraction of a second
    pysubs2.load(str(folder / "subtitles.srt"))  # what was timed parses
    listed = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--history", "--record-dir", str(record_dir)],
        capture_output=True, text=True, timeout=60, env=env(), cwd=tmp_path,
    )  # fmt: skip
    assert "interrupted" in listed.stdout and folder.name in listed.stdout  # listed, and said to be cut short
    exported = export_session(folder, tmp_path / "after-crash.mp4")
    assert exported.duration > 1.0 and "subtitles" in " ".join(exported.tracks)  # and still exportable


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real filesystem of 16 KiB (tmpfs): a recording of a few seconds fills it."""
    where = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_stops_the_recording_with_a_note_and_never_the_commentary(
    moving_video: Path, tmp_path: Path, full_disk: Path
) -> None:
    args = [
        "--source",
        str(moving_video),
        "--record-dir",
        str(full_disk),
        "--audio-out",
        "n.wav",
        "--events",
        "e.jsonl",
    ]
    result = subprocess.run(cli(*args), capture_output=True, text=True, timeout=180, env=env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "recording stopped" in line]
    assert len(notes) == 1 and "the disk is full" in notes[0] and "commentary goes on" in notes[0], result.stderr
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    stopped = next(e for e in events if e["type"] == "error" and "recording stopped" in e["message"])
    assert not stopped["fatal"]
    later = [e for e in events if e["type"] == "commentary_end" and e["t"] > stopped["t"] and not e["suppressed"]]
    assert later and all(f"] {e['text'].strip()}" in result.stdout for e in later)  # commentary went on
    assert "Traceback" not in result.stderr and "WARNING" not in result.stderr
    assert "· recorded (incomplete: the disk is full" in result.stderr
