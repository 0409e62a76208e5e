"""scripts/gpu_smoke.py on a machine without a GPU: it says so, and its figures are computed right."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from conftest import ROOT

from pipeline.events import CommentaryAudio, CommentaryDelta, CommentaryFinished, CommentaryStarted, Metrics

sys.path.insert(0, str(ROOT / "scripts"))
import gpu_smoke


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
