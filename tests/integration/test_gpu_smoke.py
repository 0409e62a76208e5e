"""scripts/gpu_smoke.py on a machine without a GPU: it says so, and its figures are computed right."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeline.events import CommentaryAudio, CommentaryDelta, CommentaryFinished, CommentaryStarted, Metrics

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_smoke  # noqa: E402
from common import RESULTS  # noqa: E402  (bench/common.py, which gpu_smoke puts on sys.path)


def test_without_cuda_it_refuses_with_a_reason():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_smoke.py")], capture_output=True, text=True)
    assert done.returncode == 2 and "no CUDA GPU" in done.stderr


def test_per_comment_figures_from_events():
    events = [
        CommentaryStarted(t=1, wall=100.0, comment_id=1, trigger="active", frames=4),
        CommentaryDelta(t=1, wall=100.2, comment_id=1, text="a" * 40),
        CommentaryAudio(t=1, wall=100.5, comment_id=1, sample_rate=24000, samples=np.zeros(10, np.int16)),
        CommentaryDelta(t=1, wall=101.2, comment_id=1, text="b" * 40),
        CommentaryFinished(t=1, wall=101.3, comment_id=1, text="x"),
        Metrics(t=1, wall=101.3, comment_id=1, stages={"model_ttft_ms": 150.0}),
        CommentaryStarted(t=2, wall=102.0, comment_id=2, trigger="active", frames=8),  # never finished
    ]
    [row] = gpu_smoke.per_comment(events)
    assert row["frames"] == 4 and row["ttft_s"] == 0.15
    assert abs(row["first_audio_s"] - 0.5) < 1e-9 and abs(row["latency_s"] - 1.3) < 1e-9
    assert abs(row["tokens_per_s"] - 20.0) < 1e-9  # 80 characters ≈ 20 tokens over 1.0 s of decoding


def test_random_weights_bench_on_cpu_at_tiny_size():
    """The --random-weights path (build from the real code, stand-in vocoder, both prefill modes) at tiny size."""
    assert gpu_smoke.main(["--random-weights", "--size", "tiny", "--device", "cpu"]) == 0
    results = json.loads((RESULTS / "gpu_smoke_random_tiny_cpu.json").read_text())["results"]
    assert results["device"] == "cpu" and results["vram_peak_gb"] == 0.0 and 0 < results["parameters_b"] < 0.1
    assert results["build_s"] > 0 and results["decode_tokens_per_s"] > 0 and results["first_audio_s"] > 0
    for figure in ("prefill_per_frame_s", "ttft_s"):
        assert results[figure]["n"] >= 16 and 0 < results[figure]["min"] <= results[figure]["median"]
    for mode in ("window_incremental", "window_full_prefill"):
        assert [row["frames"] for row in results[mode]] == list(range(1, 17))
        assert all(row["latency_s"] > 0 for row in results[mode])
    assert results["session_resets"]["incremental"] >= 1
