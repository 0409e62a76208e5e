"""Per-comment latency of a backend as its window grows 1 → 16 frames: full re-prefill vs incremental prefill, on CPU.

A live commentator sees frames arrive one at a time. With a full re-prefill every comment prefills the system text,
all N frames in the window and the prompt, so its cost grows with N; with incremental prefill the backend keeps its
KV cache across comments and a comment prefills only the frames new to it plus the prompt, so its cost should stay
flat. Each run loads one backend twice, with ``incremental_prefill`` off (before) and on (after), and alternates
comments between them (load from other processes hits both alike) while one window grows a frame per comment from
1 to 16 (the first comment is a ``start``), ``--reps`` times after one warm-up sweep. Goal (issue 12): a comment on
16 frames costs at most 1.3× a comment on one frame, incrementally.

Latency of one comment = ``stream()`` called → last delta: image preprocessing, prefill and 20 decoded tokens (EOS
ignored, so every comment decodes alike). Both backends must give the same text at every window size. (No time to
first token: random weights repeat one token without spaces, which the streamer hands over only at the end.) On a
machine shared with other work, ``--threads 1``: torch's spinning thread pool slows down many times over when
another process takes one of its cores.

Adding a backend's run: one function ``name(folder) -> Subject`` that builds or finds its model and says how to load
the backend with incremental prefill on or off, plus one entry in ``SUBJECTS``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import report, summary

from pipeline.backends.base import Backend, CommentRequest
from pipeline.backends.minicpm import MiniCPM
from pipeline.backends.transformers_vlm import TransformersVLM
from pipeline.frames import Frame
from pipeline.prompts import PromptParts
from tests.helpers.minicpm_o45 import build_tiny_model, decode_plain_tokens
from tests.helpers.tiny_models import SEED, LlavaSize, build_tiny_llava

SIZES = range(1, 17)
SHOWN = (1, 2, 4, 8, 16)  # rows printed; every size goes into the JSON
SYSTEM = "You are a live commentator. Describe the scene briefly."
NEW_TOKENS = 20
GOAL_RATIO = 1.3

# A LLaVA-1.5 style model big enough (~18M parameters) that prefill compute is visible on a CPU.
BENCH_SIZE = LlavaSize(
    image_size=224,
    patch_size=32,
    vision_hidden=192,
    vision_mlp=768,
    vision_layers=4,
    vision_heads=4,
    text_hidden=384,
    text_mlp=1536,
    text_layers=7,
    text_heads=6,
    max_positions=4096,
)


@dataclass(frozen=True)
class Subject:
    """A backend under test: its name in the report and how to load it with incremental prefill on or off."""

    name: str
    load: Callable[[bool], Backend]
    exact: bool = True  # the two modes build the same token sequence, so they must say the same


def llava(folder: Path) -> Subject:
    """The transformers backend on a random 18M-parameter LLaVA (49 image tokens a frame)."""
    path = build_tiny_llava(folder / "bench-llava", BENCH_SIZE)

    def load(incremental: bool) -> Backend:
        backend = TransformersVLM(str(path), device="cpu", incremental=incremental)
        backend._model.generation_config.min_new_tokens = NEW_TOKENS  # EOS ignored: equal decode work
        return backend

    return Subject("transformers · LLaVA 18M", load)


def minicpm_o45(folder: Path) -> Subject:
    """The MiniCPM backend on a tiny MiniCPM-o 4.5 from its real code (with its audio encoder, so its ``chat()``
    runs): the streaming session (after) against the card's ``chat()`` over the whole window (before). The two
    build different prompts, so their texts are not compared."""
    path = build_tiny_model(folder / "bench-o45", "audio")

    def load(incremental: bool) -> Backend:
        backend = MiniCPM(model=str(path), device="cpu", incremental=incremental)
        decode_plain_tokens(backend._model, path)  # equal decode work in both modes
        return backend

    return Subject("minicpm · o-4.5 tiny (real code)", load, exact=False)


SUBJECTS: list[Callable[[Path], Subject]] = [llava, minicpm_o45]


def make_frames(count: int) -> list[Frame]:
    """Distinct random 320×240 frames a second apart, as a live source hands them over."""
    rng = np.random.default_rng(SEED)
    return [
        Frame(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), float(i), time.time(), i, "bench")
        for i in range(count)
    ]


def comment(backend: Backend, frames: list[Frame]) -> tuple[float, str]:
    """One comment on ``frames``: (milliseconds to the last delta, its text)."""
    user = f"These {len(frames)} frames cover the last {len(frames) - 1} s of a live video. Comment on them now."
    request = CommentRequest(
        frames=frames,
        prompt=PromptParts(system=SYSTEM, user=user),
        max_tokens=NEW_TOKENS,
        temperature=0.0,
        trigger="start" if len(frames) == 1 else "active",
        stream_id="bench",
    )
    start = time.perf_counter()
    text = "".join(backend.stream(request))
    return (time.perf_counter() - start) * 1000, text


def run(subject: Subject, reps: int) -> dict[str, Any]:
    """Sweep the window 1 → 16 frames ``reps`` times through the subject before and after; its figures, keyed by
    its name so several subjects share one report."""
    backends = {"before": subject.load(False), "after": subject.load(True)}
    frames = make_frames(max(SIZES))
    ms: dict[str, dict[int, list[float]]] = {mode: {n: [] for n in SIZES} for mode in backends}
    texts: dict[str, dict[int, set[str]]] = {mode: {n: set() for n in SIZES} for mode in backends}
    try:
        for rep in range(reps + 1):  # the first sweep warms up: first calls at a new shape pay one-off costs
            for n in SIZES:
                for mode, backend in backends.items():
                    took, text = comment(backend, frames[:n])
                    texts[mode][n].add(text)
                    if rep:
                        ms[mode][n].append(took)
    finally:
        for backend in backends.values():
            backend.close()

    def median(samples: dict[int, list[float]], n: int) -> float:
        return round(statistics.median(samples[n]), 1)

    print(f"\n{subject.name}: {backends['after'].description}")
    print(f"{'frames':>6} {'before ms':>9} {'after ms':>8} {'speed-up':>8}  same text")
    rows: dict[str, Any] = {}
    for n in SIZES:
        same = len(texts["before"][n] | texts["after"][n]) == 1 if subject.exact else None
        before, after = median(ms["before"], n), median(ms["after"], n)
        if n in SHOWN:
            print(f"{n:>6} {before:>9.1f} {after:>8.1f} {before / after:>7.2f}x  {'-' if same is None else same}")
        rows[f"{subject.name} · {n} frames"] = {
            "before_ms": summary(ms["before"][n]),
            "after_ms": summary(ms["after"][n]),
            "same_text": same,
        }
    lo, hi = min(SIZES), max(SIZES)
    after_ratio = median(ms["after"], hi) / median(ms["after"], lo)
    same_everywhere = all(row["same_text"] is not False for row in rows.values())
    return {
        f"{subject.name} · backend": backends["after"].description,
        **rows,
        f"{subject.name} · after ratio {hi}/{lo} frames": round(after_ratio, 2),
        f"{subject.name} · before ratio {hi}/{lo} frames": round(
            median(ms["before"], hi) / median(ms["before"], lo), 2
        ),
        f"{subject.name} · speed-up at {hi} frames": round(median(ms["before"], hi) / median(ms["after"], hi), 2),
        f"{subject.name} · same text": same_everywhere if subject.exact else "not compared (different prompts)",
        f"{subject.name} · pass": after_ratio <= GOAL_RATIO and same_everywhere,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5, help="timed sweeps 1 → 16 frames per backend and mode")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads (all CPUs)")
    args = parser.parse_args()
    threads = args.threads
    torch.set_num_threads(threads)
    results: dict[str, Any] = {"threads": threads, "reps": args.reps, "new_tokens_per_comment": NEW_TOKENS}
    with tempfile.TemporaryDirectory() as tmp:
        for make in SUBJECTS:
            subject = make(Path(tmp))
            results.update(run(subject, args.reps))
    hi, lo = max(SIZES), min(SIZES)
    report(
        "incremental_prefill",
        results,
        {
            f"after ratio {hi}/{lo} frames": f"<= {GOAL_RATIO} per backend (before ratio measured in the same run)",
            "same text": "before and after give the same greedy text at every window size",
        },
    )


if __name__ == "__main__":
    main()
