"""Per-stage latency and the pipeline's own overhead, with a tiny random VLM on CPU.

Plays a generated clip with a hard cut every second through the real pipeline (file source →
hub → commentator → scheduler → transformers backend), twice in one run: without and with the recorder that
keeps every session (events, subtitles; no narration, as nothing speaks). Overhead = time from the
commentator deciding to speak to the first delta on the bus, minus the model's own time to first token;
for cut-triggered comments also from the frame leaving the decoder. Goals: <= 20 ms overhead at the
median; the recorder adds <= 1 ms to it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import report, summary

from pipeline.backends.base import CommentRequest
from pipeline.backends.transformers_vlm import TransformersVLM
from pipeline.config import Tuning
from pipeline.events import Metrics
from pipeline.frames import Frame
from pipeline.prompts import PromptParts, load_profiles
from pipeline.recording.recorder import Recorder
from pipeline.session import Session
from pipeline.sources.file import FileSource
from tests.helpers.media import Segment, write_video
from tests.helpers.tiny_models import build_tiny_qwen2vl


def warm_up(backend: TransformersVLM) -> None:
    """One throw-away comment: torch's first call pays one-off costs that are not pipeline latency."""
    frame = Frame(np.zeros((180, 320, 3), np.uint8), 0.0, time.time(), 0, "warm-up")
    prompt = PromptParts(system="Describe.", user="What is here?")
    for _ in backend.stream(CommentRequest(frames=[frame], prompt=prompt, max_tokens=4, temperature=0)):
        pass


def run(clip: Path, backend: TransformersVLM, seconds: int, record_dir: Path | None) -> list[Metrics]:
    """One session on the clip; with ``record_dir``, the recorder keeps it as the apps do by default."""
    tuning = Tuning(capture_fps=2, window=8, stride=2, max_frames=4, max_tokens=16, min_interval=0.3)
    consumers = [Recorder(record_dir)] if record_dir is not None else []
    session = Session(backend, load_profiles()["narrator"], tuning, consumers=consumers)
    sub = session.bus.subscribe("bench", maxsize=100_000)
    session.start(FileSource(clip))
    session.join(seconds + 60)
    session.stop()
    return [e for e in sub if isinstance(e, Metrics)]


def figures(metrics: list[Metrics]) -> dict[str, dict[str, float]]:
    stage = lambda key, ms=metrics: [m.stages[key] for m in ms if key in m.stages]  # noqa: E731
    cut_metrics = [m for m in metrics if m.stages.get("frame_age_ms", 1e9) < 1000]
    frame_overhead = [
        m.stages["frame_to_first_delta_ms"] - m.stages["model_ttft_ms"]
        for m in cut_metrics
        if "model_ttft_ms" in m.stages
    ]
    return {
        "comments": {"n": len(metrics)},
        "window_ms": summary(stage("window_ms")),
        "prompt_ms": summary(stage("prompt_ms")),
        "model_ttft_ms": summary(stage("model_ttft_ms")),
        "first_delta_ms": summary(stage("first_delta_ms")),
        "total_ms": summary(stage("total_ms")),
        "frame_age_ms": summary(stage("frame_age_ms")),
        "queue_wait_ms (the scheduler: asked for a turn → granted)": summary(stage("queue_wait_ms")),
        "scene_score_ms_per_frame": summary(stage("scene_score_ms")),
        "overhead_ms (trigger→first delta − model TTFT)": summary(stage("overhead_ms")),
        "frame_overhead_ms (frame→first delta − model TTFT)": summary(frame_overhead),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=30, help="length of the clip")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        clip = write_video(
            tmpdir / "cuts.mp4", [Segment(1.0, i % 7, moving=bool(i % 2)) for i in range(args.seconds)], fps=25
        )
        backend = TransformersVLM(str(build_tiny_qwen2vl(tmpdir / "tiny-qwen2vl")), device="cpu")
        warm_up(backend)
        for name, record_dir in (("without the recorder", None), ("with the recorder", tmpdir / "sessions")):
            for key, value in figures(run(clip, backend, args.seconds, record_dir)).items():
                results[f"{key} — {name}"] = value
        backend.close()
    overhead = "overhead_ms (trigger→first delta − model TTFT)"
    difference = results[f"{overhead} — with the recorder"].get("median", 0) - results[
        f"{overhead} — without the recorder"
    ].get("median", 0)
    results["recorder's cost: overhead median, with − without (ms)"] = {"median": round(difference, 3)}
    report("pipeline_latency", results, {"overhead_ms median": "<= 20 ms", "recorder's cost": "<= 1 ms at the median"})


if __name__ == "__main__":
    main()
