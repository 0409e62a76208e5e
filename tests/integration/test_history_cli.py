"""The recordings from the terminal, as a user types it: ``--history``, ``--history-search``, ``--export`` at
the end of a headless run, and retention at start; real subprocesses and files, the MP4 read with PyAV."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np

from tests.helpers.recorded_sessions import Said, write_session
from tests.integration.test_recording import env, only_folder
from tests.unit.test_narration_file import loudness

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400.0


def app(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "app.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(),
        cwd=cwd,
    )


def test_history_lists_sessions_newest_first_and_search_finds_comments(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    now = time.time()
    write_session(root, "old", started=now - 3 * DAY, said=[Said(1.0, "A fox crosses the lawn.")])
    write_session(root, "new", started=now - 60, said=[Said(2.0, "The gate opens."), Said(5.0, "Nobody is there.")])
    listed = app("--history", "--record-dir", str(root), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 and "(" + str(root / "new") + ")" in lines[0] and "2 comments" in lines[0]
    assert "1 comment " in lines[1]

    found = app("--history-search", "fox", "--record-dir", str(root), cwd=tmp_path)
    assert found.returncode == 0 and found.stdout.count("\n") == 1
    assert "[00:01.0]" in found.stdout and "[fox]" in found.stdout and "(old)" in found.stdout
    quoted = app("--history-search", '"gate" AND', "--record-dir", str(root), cwd=tmp_path)  # FTS syntax: plain words
    assert quoted.returncode == 1 and not quoted.stderr  # "and" is not in that comment: no match, no error
    quoted = app("--history-search", '"gate"', "--record-dir", str(root), cwd=tmp_path)
    assert quoted.returncode == 0 and "The [gate] opens." in quoted.stdout
    none = app("--history-search", "zebra", "--record-dir", str(root), cwd=tmp_path)
    assert none.returncode == 1 and "no comment" in none.stdout and not none.stderr


def test_retention_at_start_removes_what_is_too_old_and_says_so(story_video: Path, tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    old = write_session(root, "ancient", started=time.time() - 40 * DAY, said=[Said(1.0, "Long ago.")])
    result = app(
        "--headless", "--backend", "opencv", "--source", str(story_video), "--record-dir", str(root),
        "--keep-days", "30", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not old.exists()
    assert (
        "· retention: " in result.stderr
        and "removed ancient" in result.stderr
        and "older than 30 days" in result.stderr
    )
    assert (root / "retention.log").read_text().count("removed ancient") == 1
    listed = app("--history", "--record-dir", str(root), cwd=tmp_path)
    assert listed.stdout.count("\n") == 1 and "ancient" not in listed.stdout  # the index forgot it too


def test_export_at_the_end_of_a_headless_run_is_a_narrated_mp4(story_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "narrated.mp4"
    args = ["--headless", "--backend", "opencv", "--source", str(story_video), "--record-dir", "sessions"]
    result = app(*args, "--export", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"· exported: {out}" in result.stderr
    folder = only_folder(tmp_path / "sessions")
    with av.open(str(story_video)) as source:
        source_frames = source.streams.video[0].frames
        source_seconds = float(source.duration) / av.time_base
    with av.open(str(out)) as mp4:
        kinds = [s.type for s in mp4.streams]
        assert kinds.count("video") == 1 and kinds.count("subtitle") == 1 and kinds.count("audio") >= 1
        assert mp4.streams.video[0].frames == source_frames  # the video stream-copied, every frame
        narration = mp4.streams.audio[0]
        assert abs(float(narration.duration * narration.time_base) - source_seconds) < 0.1
        samples = [f.to_ndarray().reshape(-1) for f in mp4.decode(narration)]
    audio = np.concatenate(samples)
    rate = narration.rate
    assert loudness(audio, rate, 0.2, 2.0) > 0.01  # the first comment is heard in the MP4
    assert (folder / "narration.ogg").is_file()


def test_export_without_recording_is_refused_at_once(story_video: Path, tmp_path: Path) -> None:
    result = app("--headless", "--source", str(story_video), "--no-record", "--export", "x.mp4", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "onlooker: error: --export makes the video from the session's recording; drop --no-record"
    )
