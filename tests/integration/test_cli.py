"""The headless CLI as a user runs it: a real subprocess, real files, real loopback servers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.media import write_audio_only

ROOT = Path(__file__).resolve().parents[2]
BAD_PRESETS = b"default: a\npresets:\n  a: {fps: 1}\n"


def run_cli(*args: str, timeout: float = 120, cwd: Path = ROOT / "tests") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONLOOKER_")}
    return subprocess.run(
        [sys.executable, str(ROOT / "app.py"), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("onlooker: error:")]


def test_help_imports_nothing_heavy():
    code = (
        "import runpy, sys\n"
        "sys.argv = ['app.py', '--help']\n"
        "try:\n    runpy.run_path('app.py', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'gradio', 'cv2', 'av') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60).stdout
    assert "--backend" in out and "ONLOOKER_BACKEND" in out
    assert "HEAVY []" in out


def test_headless_run_prints_commentary_and_writes_the_event_contract(story_video, tmp_path):
    events_file = tmp_path / "events.jsonl"
    result = run_cli("--headless", "--source", str(story_video), "--backend", "opencv", "--events", str(events_file))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line]
    assert lines and all(line.startswith("[00:") for line in lines)
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert all({"type", "t", "wall"} <= set(e) for e in events)
    assert all(isinstance(e["t"], float) and isinstance(e["wall"], float) for e in events)
    types = {e["type"] for e in events}
    expected = {
        "source_status",
        "mode",
        "scene_cut",
        "commentary_start",
        "commentary_delta",
        "commentary_end",
        "metrics",
    }
    assert expected <= types
    ends = [e for e in events if e["type"] == "commentary_end"]
    assert all(e["text"] for e in ends if not e["suppressed"])
    assert events[-1]["type"] == "source_status" and events[-1]["state"] == "ended"
    assert "backend: OpenCV" in result.stderr


def test_env_vars_are_flag_twins(story_video, tmp_path):
    env = {**os.environ, "ONLOOKER_HEADLESS": "true", "ONLOOKER_SOURCE": str(story_video), "ONLOOKER_BACKEND": "nope"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py")], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
    )
    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        "onlooker: error: --backend / ONLOOKER_BACKEND: unknown backend 'nope'; "
        "allowed: auto, opencv, transformers, minicpm, openai"
    ]


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda d: ["--source", str(d / "missing.mp4")], "file not found"),
        (lambda d: ["--source", str(_write(d / "empty.mp4", b""))], "the file is empty"),
        (lambda d: ["--source", str(_write(d / "text.mp4", b"hello\n" * 99))], "not a video FFmpeg can read"),
        (lambda d: ["--source", str(write_audio_only(d / "a.m4a"))], "has no video stream"),
        (lambda d: ["--source", "http://127.0.0.1:9/cam.mjpg"], "connection refused"),
        (lambda d: ["--backend", "gpt5", "--source", "x.mp4"], "unknown backend 'gpt5'"),
        (lambda d: ["--source", "x.mp4", "--presets-file", str(_write(d / "p.yaml", BAD_PRESETS))],
         "presets.a.fps: unknown key"),
        (lambda d: ["--source", "x.mp4", "--profiles-dir", str(_profiles(d))], "bad.yaml: system_prompt"),
        (lambda d: ["--source", "x.mp4", "--preset", "turbo"], "unknown preset 'turbo'"),
        (lambda d: [], "--headless needs --source"),
    ],
    ids=["missing", "empty", "text-as-mp4", "audio-only", "unreachable", "backend", "preset-file", "profile-file",
         "preset-name", "no-source"],
)  # fmt: skip
def test_bad_input_gives_one_error_line_and_nonzero_exit(tmp_path, make_args, message):
    result = run_cli("--headless", "--backend", "opencv", *make_args(tmp_path), timeout=60)
    assert result.returncode == 1
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_url_returning_html_fails_clearly(http_dir):
    base, root = http_dir
    (root / "index.html").write_text("<html><body>camera admin page</body></html>")
    result = run_cli("--headless", "--backend", "opencv", "--source", f"{base}/index.html", timeout=60)
    assert result.returncode == 1
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and "web page" in errors[0]


@contextlib.contextmanager
def commenting_on_a_loop(video: Path) -> Iterator[subprocess.Popen[str]]:
    """The CLI commenting on ``video`` in a loop (it never ends by itself), past its first comment; killed
    at the end if the test did not end it."""
    app = str(ROOT / "app.py")
    command = [sys.executable, app, "--headless", "--loop", "--backend", "opencv", "--source", str(video)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith("[00:")  # blocks until the first comment has been printed
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ctrl_c_stops_cleanly_with_exit_zero(story_video):
    with commenting_on_a_loop(story_video) as proc:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert "Traceback" not in proc.stderr.read()


def test_a_closed_stdout_ends_the_run_quietly(story_video):
    """`python app.py --headless ... | head -1`: once the reader has gone, the run ends (it would otherwise
    comment to nobody forever on a looping or live source), exit 0 and no traceback about the pipe."""
    with commenting_on_a_loop(story_video) as proc:
        proc.stdout.close()  # the reader goes away after the first line; the next write meets a closed pipe
        assert proc.wait(timeout=60) == 0
        stderr = proc.stderr.read()
        assert "Traceback" not in stderr and "Exception ignored" not in stderr and "error" not in stderr, stderr


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _profiles(directory: Path) -> Path:
    folder = directory / "profiles"
    folder.mkdir()
    (folder / "bad.yaml").write_text("name: Bad\nsystem_prompt: ''\n")
    return folder


def test_tiny_vlm_end_to_end_from_a_video_file(story_video, tmp_path):
    """The transformers backend through the real CLI: Auto classes, chat template, streamer, events."""
    from tests.helpers.tiny_models import build_tiny_qwen2vl

    model = build_tiny_qwen2vl(tmp_path / "tiny-qwen2vl")
    events_file = tmp_path / "events.jsonl"
    result = run_cli(
        "--headless", "--source", str(story_video), "--model", str(model), "--device", "cpu",
        "--preset", "sniper", "--events", str(events_file), timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "backend: transformers · tiny-qwen2vl on cpu (float32, incremental prefill)" in result.stderr
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    starts = [e for e in events if e["type"] == "commentary_start"]
    ends = {e["comment_id"]: e for e in events if e["type"] == "commentary_end"}
    assert len(starts) >= 3 and {s["comment_id"] for s in starts} == set(ends)
    assert any(s["trigger"] == "scene_cut" for s in starts)
    assert all(s["frames"] >= 1 for s in starts)
    metrics = [e for e in events if e["type"] == "metrics"]
    assert any("model_ttft_ms" in m["stages"] for m in metrics)
    assert not [e for e in events if e["type"] == "error"]


def test_auto_falls_back_to_the_offline_narrator_when_the_model_cannot_load(short_video, tmp_path):
    result = run_cli("--headless", "--source", str(short_video), "--model", str(tmp_path / "no-such-model"))
    assert result.returncode == 0
    assert "OpenCV narrator" in result.stderr and "could not load model" in result.stderr


def test_audio_out_writes_the_narration_on_the_media_timeline(story_video, tmp_path):
    import wave

    import numpy as np

    wav_path, events_file = tmp_path / "narration.wav", tmp_path / "events.jsonl"
    result = run_cli(
        "--headless", "--source", str(story_video), "--backend", "opencv", "--audio-out", str(wav_path),
        "--events", str(events_file),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with wave.open(str(wav_path)) as wav:
        rate, channels = wav.getframerate(), wav.getnchannels()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    assert rate == 24000 and channels == 1
    assert len(samples) / rate >= 13.5  # as long as the 14 s clip played
    events = list(map(json.loads, events_file.read_text().splitlines()))
    kept = [e["at"] for e in events if e["type"] == "speech_start"]
    assert len(kept) >= 2 and kept == sorted(kept)

    def loudness(start: float, seconds: float = 0.5) -> float:
        window = samples[int(start * rate) : int((start + seconds) * rate)].astype(np.float64)
        return float(np.sqrt(np.mean(window**2))) if len(window) else 0.0

    assert all(loudness(t) > 300 for t in kept), [(t, loudness(t)) for t in kept]  # speech where comments were
    assert min(loudness(t, 0.25) for t in np.arange(0.0, 13.0, 0.25)) < 10  # and silence in between


def test_audio_out_without_a_speech_engine_is_an_error(short_video, tmp_path):
    result = run_cli(
        "--headless", "--source", str(short_video), "--tts", "none", "--audio-out", str(tmp_path / "a.wav")
    )
    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        "onlooker: error: --audio-out needs a speech engine; leave --tts at auto or pick one"
    ]
