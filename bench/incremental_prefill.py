"""Per-comment latency with incremental prefill into a persistent KV cache vs a naive re-prefill, on CPU.

A live commentator sees frames arrive one at a time. Naively, every comment re-prefills the system text, all N
frames in the window and the prompt, so its cost grows with N. With incremental prefill each frame is prefilled
once into a ``DynamicCache`` as it arrives; a comment prefills only the newest frame plus the prompt on top of
the cache and decodes, so its cost should stay flat as N grows. Goal (issue): incremental latency at a 16-frame
window <= 1.3x latency at 1 frame, measured against the naive baseline in the same run.

Model: a ~20M-parameter random LLaVA (CLIP 224 px / patch 32 -> 49 image tokens per frame, Llama text) built
offline into a temp dir and loaded through ``AutoProcessor`` / ``AutoModelForImageTextToText`` like the backend.

Cache policy: *crop*. After a comment the prompt and generated tokens are cut off again with ``cache.crop(n)``,
n = the length after the newest frame, so the cache always holds exactly ``prefix + frames`` — the same token
sequence a naive prefill of those frames builds. That keeps both paths on identical inputs (so their greedy
tokens and logits are compared at every window size) and keeps old prompts/comments out of later contexts.

Latency of one comment = image preprocessing + prefill + 20 greedy decode steps (EOS ignored, so every comment
decodes the same number of tokens). Frames added to the cache between comments are timed separately
(``frame_add_ms``): that work happens as frames arrive, not while a viewer waits for a comment.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import report, summary
from PIL import Image
from tiny_models import SEED, LlavaSize, build_tiny_llava
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    DynamicCache,
)

SIZES = (1, 2, 4, 8, 16)
SYSTEM = "You are a live commentator. Describe the scene briefly."
PROMPT = "Comment on what is happening now."
NEW_TOKENS = 20
# Random weights repeat one token, so equal tokens alone prove little; the logits must agree too.
LOGIT_TOLERANCE = 1e-3


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


def render(processor: Any, n_images: int) -> str:
    """The chat text for ``n_images`` frames and the prompt, exactly as the transformers backend builds it."""
    user = [*({"type": "image"} for _ in range(n_images)), {"type": "text", "text": PROMPT}]
    messages = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": user},
    ]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@dataclass
class Chunks:
    """Token ids of the pieces the chat text splits into: ``prefix + frame * N + tail`` for N frames."""

    prefix: torch.Tensor
    frame: torch.Tensor  # image placeholders expanded to the per-image token count, plus the separator
    tail: torch.Tensor


def split_template(processor: Any, tokens_per_image: int) -> Chunks:
    """Derive the per-frame piece from the template itself (1 vs 2 images), so no layout is hard-coded."""
    one, two = render(processor, 1), render(processor, 2)
    image_token = processor.image_token
    prefix = one.split(image_token)[0]
    unit = len(two) - len(one)
    frame, tail = one[len(prefix) : len(prefix) + unit], one[len(prefix) + unit :]
    for n in SIZES:
        assert render(processor, n) == prefix + frame * n + tail, "template is not prefix + frame*N + tail"

    def ids(text: str) -> torch.Tensor:
        text = text.replace(image_token, image_token * tokens_per_image)
        return torch.tensor([processor.tokenizer(text, add_special_tokens=False)["input_ids"]])

    return Chunks(ids(prefix), ids(frame), ids(tail))


def forward(model: Any, cache: DynamicCache, input_ids: torch.Tensor, pixel_values: torch.Tensor | None) -> Any:
    """One prefill step on top of ``cache``: ``cache_position`` continues after what the cache holds.

    No attention mask: with none, Llama builds the causal mask from ``cache_position`` (a 4D mask when the cache
    is non-empty and more than one token comes in; SDPA's ``is_causal`` otherwise). An own loop, not ``generate``:
    LLaVA's ``prepare_inputs_for_generation`` passes ``pixel_values`` only when ``cache_position[0] == 0``, so
    ``generate`` on a non-empty cache silently drops a new frame's pixels and runs on bare ``<image>`` embeddings.
    """
    past = cache.get_seq_length()
    cache_position = torch.arange(past, past + input_ids.shape[1])
    return model(
        input_ids=input_ids,
        pixel_values=pixel_values,
        past_key_values=cache,
        cache_position=cache_position,
        use_cache=True,
        logits_to_keep=1,
    )


@dataclass
class Comment:
    """One comment: time to first token (preprocess + prefill), total time, greedy tokens, first-token logits."""

    ttft_ms: float
    ms: float
    tokens: list[int]
    first_logits: torch.Tensor


def decode(model: Any, cache: DynamicCache, logits: torch.Tensor, start: float) -> Comment:
    """Greedy ``NEW_TOKENS`` steps from the prefill's last logits (EOS ignored: equal work for every comment)."""
    ttft = (time.perf_counter() - start) * 1000
    first = logits[0, -1].clone()
    tokens: list[int] = []
    for _ in range(NEW_TOKENS):
        token = int(logits[0, -1].argmax())
        tokens.append(token)
        logits = forward(model, cache, torch.tensor([[token]]), None).logits
    return Comment(ttft, (time.perf_counter() - start) * 1000, tokens, first)


def naive_comment(model: Any, processor: Any, frames: list[Image.Image]) -> Comment:
    """Process and prefill system + all frames + prompt from scratch, as the backend does today, then decode."""
    start = time.perf_counter()
    inputs = processor(text=[render(processor, len(frames))], images=frames, return_tensors="pt")
    cache = DynamicCache()
    logits = forward(model, cache, inputs["input_ids"], inputs["pixel_values"]).logits
    return decode(model, cache, logits, start)


class IncrementalSession:
    """A persistent cache holding ``prefix + frames``; comments prefill only the newest frame and the prompt."""

    def __init__(self, model: Any, processor: Any, chunks: Chunks) -> None:
        self.model, self.processor, self.chunks = model, processor, chunks
        self.cache = DynamicCache()
        forward(model, self.cache, chunks.prefix, None)

    def _pixels(self, frame: Image.Image) -> torch.Tensor:
        return self.processor.image_processor(frame, return_tensors="pt")["pixel_values"]

    def add_frame(self, frame: Image.Image) -> float:
        """Prefill one frame's placeholder tokens with its pixels as it arrives; returns milliseconds."""
        start = time.perf_counter()
        forward(self.model, self.cache, self.chunks.frame, self._pixels(frame))
        return (time.perf_counter() - start) * 1000

    def comment(self, frame: Image.Image) -> Comment:
        """Prefill the newest frame + prompt in one step, decode, then crop back to ``prefix + frames``."""
        start = time.perf_counter()
        frames_end = self.cache.get_seq_length() + self.chunks.frame.shape[1]
        input_ids = torch.cat([self.chunks.frame, self.chunks.tail], dim=1)
        logits = forward(self.model, self.cache, input_ids, self._pixels(frame)).logits
        result = decode(self.model, self.cache, logits, start)
        self.cache.crop(frames_end)  # keep the new frame, drop the prompt and the comment
        return result

    def retract(self) -> None:
        """Forget the newest frame, so the same comment can be timed again from the same state."""
        self.cache.crop(self.cache.get_seq_length() - self.chunks.frame.shape[1])


def make_frames(count: int) -> list[Image.Image]:
    """Distinct random frames: with random weights the logits still move with the pixels (see ``sensitivity``)."""
    rng = np.random.default_rng(SEED)
    return [Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per window size and path")
    args = parser.parse_args()
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    frames = make_frames(max(SIZES))
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        path = build_tiny_llava(Path(tmp) / "bench-llava", BENCH_SIZE)
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path, torch_dtype=torch.float32).eval()
    params = sum(p.numel() for p in model.parameters())
    per_frame = processor.image_processor.crop_size["height"] // processor.patch_size
    drop_cls = processor.vision_feature_select_strategy == "default"
    tokens_per_image = per_frame**2 + processor.num_additional_image_tokens - drop_cls
    chunks = split_template(processor, tokens_per_image)
    print(
        f"model: {params / 1e6:.1f}M parameters, {tokens_per_image} image tokens per frame "
        f"({chunks.frame.shape[1]} tokens with separator), prefix {chunks.prefix.shape[1]}, "
        f"tail {chunks.tail.shape[1]} tokens, {threads} threads"
    )
    for n in SIZES:  # the split must reproduce the processor's own token sequence exactly
        expected = processor(text=[render(processor, n)], images=frames[:n], return_tensors="pt")["input_ids"]
        assert torch.equal(torch.cat([chunks.prefix, *[chunks.frame] * n, chunks.tail], dim=1), expected)

    naive: dict[int, list[Comment]] = {n: [] for n in SIZES}
    incremental: dict[int, list[Comment]] = {n: [] for n in SIZES}
    frame_add_ms: list[float] = []
    with torch.inference_mode():
        for n in SIZES:  # warm-up: first calls at a new shape pay one-off allocation costs
            naive_comment(model, processor, frames[:n])
        # How far the logits move when the newest frame changes: a wrong cache would show up at this scale.
        other = naive_comment(model, processor, [frames[1]]).first_logits
        sensitivity = float((naive_comment(model, processor, frames[:1]).first_logits - other).abs().max())
        warm = IncrementalSession(model, processor, chunks)
        warm.add_frame(frames[0])
        warm.comment(frames[1])
        session = IncrementalSession(model, processor, chunks)
        for k in range(1, max(SIZES) + 1):
            if k not in SIZES:
                frame_add_ms.append(session.add_frame(frames[k - 1]))
                continue
            for rep in range(args.reps):  # interleaved, so load from other processes hits both paths alike
                naive[k].append(naive_comment(model, processor, frames[:k]))
                if rep:
                    session.retract()
                incremental[k].append(session.comment(frames[k - 1]))
            assert session.cache.get_seq_length() == chunks.prefix.shape[1] + k * chunks.frame.shape[1]

    def median(runs: list[Comment], key: str = "ms") -> float:
        return round(statistics.median(getattr(r, key) for r in runs), 1)

    rows: dict[str, Any] = {}
    matches: dict[int, bool] = {}
    print(f"\n{'frames':>6} {'tokens':>6} {'naive ms':>9} {'incr ms':>8} {'speed-up':>8} {'naive ttft':>10}", end="")
    print(f" {'incr ttft':>9}  same tokens  max |Δlogit|")
    for n in SIZES:
        same = all(r.tokens == naive[n][0].tokens for r in incremental[n] + naive[n])
        diff = max(float((r.first_logits - naive[n][0].first_logits).abs().max()) for r in incremental[n])
        matches[n] = same and diff <= LOGIT_TOLERANCE
        nv, inc = median(naive[n]), median(incremental[n])
        nv_ttft, inc_ttft = median(naive[n], "ttft_ms"), median(incremental[n], "ttft_ms")
        tokens = chunks.prefix.shape[1] + n * chunks.frame.shape[1] + chunks.tail.shape[1]
        print(f"{n:>6} {tokens:>6} {nv:>9.1f} {inc:>8.1f} {nv / inc:>7.2f}x {nv_ttft:>10.1f} {inc_ttft:>9.1f}", end="")
        print(f"  {same!s:>11}  {diff:.2e}")
        rows[f"{n} frames"] = {
            "context_tokens": tokens,
            "naive_ms": summary([r.ms for r in naive[n]]),
            "incremental_ms": summary([r.ms for r in incremental[n]]),
            "naive_ttft_ms": nv_ttft,
            "incremental_ttft_ms": inc_ttft,
            "same_greedy_tokens": same,
            "max_first_logit_diff": float(f"{diff:.3g}"),
        }
    lo, hi = min(SIZES), max(SIZES)
    incremental_ratio = median(incremental[hi]) / median(incremental[lo])
    naive_ratio = median(naive[hi]) / median(naive[lo])
    passed = incremental_ratio <= 1.3 and all(matches.values())
    results = {
        "parameters_m": round(params / 1e6, 2),
        "image_tokens_per_frame": tokens_per_image,
        "new_tokens_per_comment": NEW_TOKENS,
        "threads": threads,
        "reps": args.reps,
        **rows,
        "frame_add_ms (between comments)": summary(frame_add_ms),
        "logit shift from another frame": float(f"{sensitivity:.3g}"),
        f"incremental ratio {hi}/{lo} frames": round(incremental_ratio, 2),
        f"naive ratio {hi}/{lo} frames": round(naive_ratio, 2),
        f"speed-up at {hi} frames": round(median(naive[hi]) / median(incremental[hi]), 2),
        f"ttft speed-up at {hi} frames": round(median(naive[hi], "ttft_ms") / median(incremental[hi], "ttft_ms"), 2),
        "matches naive (all sizes)": all(matches.values()),
        "pass": passed,
    }
    report(
        "incremental_prefill",
        results,
        {
            f"incremental ratio {hi}/{lo} frames": "<= 1.3 (naive ratio measured in the same run)",
            "matches naive": f"same greedy tokens and first logits within {LOGIT_TOLERANCE:g} at every window size",
        },
    )


if __name__ == "__main__":
    main()
