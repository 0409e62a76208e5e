"""GPU smoke test and benchmark for the MiniCPM backend: load it, commentate, report.

For a user with an NVIDIA GPU (this project's CI has none). Two ways to run it:

* The published checkpoint (downloaded): loads the chosen variant through the real backend, plays a
  video (yours with --video, or a generated clip with motion and a cut every few seconds) through the
  real pipeline with the model's own voice when it has one, and writes bench/results/gpu_smoke.json:
  load time, peak VRAM, time to first token, tokens per second, time to first audio and per-comment
  latency, plus how the per-comment cost behaves as the window fills (flat with incremental prefill).
* ``--random-weights``: no download and no multi-GB write. Builds the full-size MiniCPM-o 4.5
  architecture from the model's own code (tests/helpers/minicpm_o45.py) with random BF16 weights made on the
  GPU, and drives the real backend with it (bench/results/gpu_smoke_random.json): build time, peak
  VRAM, prefill time per frame, time to first token, decode tokens/s at a fixed length, per-comment
  latency as the window grows 1 → 16 frames (incremental prefill vs a full re-prefill every comment)
  and time to the first audio chunk. The text is garbage, the timings are the model's. The Step-Audio
  Token2wav vocoder's weights are not available, so a test double (tests/helpers/token2wav_double.py) returns
  a tone at once: audio timings cover the LLM and the real MiniCPMTTS up to its audio tokens, not the
  vocoder's synthesis.

    python scripts/gpu_smoke.py                                   # MiniCPM-o 4.5, precision auto
    python scripts/gpu_smoke.py --precision int4 --seconds 120
    python scripts/gpu_smoke.py --model openbmb/MiniCPM-V-4_5 --vision-only
    python scripts/gpu_smoke.py --model /models/MiniCPM-o-4_5 --no-incremental-prefill   # the baseline
    python scripts/gpu_smoke.py --random-weights                  # no download, a few minutes
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import report, summary  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.backends.base import CommentRequest  # noqa: E402
from pipeline.backends.minicpm import DEFAULT_MODEL, MiniCPM  # noqa: E402
from pipeline.backends.remote_code import settings_aware_import_check  # noqa: E402
from pipeline.config import load_presets  # noqa: E402
from pipeline.events import (  # noqa: E402
    CommentaryAudio,
    CommentaryDelta,
    CommentaryFinished,
    CommentaryStarted,
    Event,
    Metrics,
)
from pipeline.frames import Frame  # noqa: E402
from pipeline.prompts import PromptParts, load_profiles  # noqa: E402
from pipeline.session import Session  # noqa: E402
from pipeline.sources.file import FileSource  # noqa: E402
from pipeline.speech.engines import Speech  # noqa: E402
from pipeline.speech.speaker import SpeechOptions  # noqa: E402
from tests.helpers import token2wav_double  # noqa: E402
from tests.helpers.media import Segment, write_video  # noqa: E402
from tests.helpers.minicpm_o45 import TINY, Size, build_model_folder, decode_plain_tokens  # noqa: E402

# The published checkpoint's sizes. Sources (third-party copies are named as such):
FULL = Size(
    # Text: Qwen3-8B. Its config.json (huggingface.co/Qwen/Qwen3-8B, as copied in
    # huggingface.co/thejaminator/qwen-hook-layer-9 "Copy config.json from Qwen/Qwen3-8B") gives hidden 4096,
    # 36 layers, 32 heads, 8 KV heads, head_dim 128, intermediate 12288 (vocab 151936 there).
    hidden_size=4096,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    intermediate_size=12288,
    head_dim=128,
    # MiniCPM-o 4.5's own config.json: vocab_size 151748, with the same text sizes as above (quoted in a
    # third-party test, TorchNintCausalLMConfig.from_minicpmo45_hf_config, found with the search tool).
    vocab_size=151748,
    # Vision: SigLIP2-400M, exactly the model code's MiniCPMOConfig.default_vision_config
    # (configuration_minicpmo.py: "same as HuggingFaceM4/siglip-so400m-14-980-flash-attn2-navit").
    vision={
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "patch_size": 14,
        "image_size": 980,
        "model_type": "siglip",
    },
    # Audio: the Whisper-medium encoder. openai/whisper-medium's config.json (as carried by its fine-tunes,
    # e.g. huggingface.co/shripadbhat/whisper-medium-hi, "_name_or_path": "openai/whisper-medium"):
    # d_model 1024, 24 encoder layers, 16 heads, encoder_ffn_dim 4096, 80 mel bins, 1500 source positions.
    # The decoder sizes are whisper-medium's too; MiniCPMWhisperEncoder builds no decoder.
    audio={
        "d_model": 1024,
        "encoder_layers": 24,
        "encoder_attention_heads": 16,
        "encoder_ffn_dim": 4096,
        "decoder_layers": 24,
        "decoder_attention_heads": 16,
        "decoder_ffn_dim": 4096,
        "num_mel_bins": 80,
        "max_source_positions": 1500,
    },
    # TTS (MiniCPMTTS; llm_dim is set to the text hidden size, 4096, by the builder). hidden 768, 20 layers,
    # 12 heads, intermediate 3072 are MiniCPMTTSConfig's defaults (configuration_minicpmo.py) and the values a
    # third-party MiniCPM-o-4_5 TTS GGUF export writes (scripts/merge_roxy_tts.py: also num_audio_tokens 6562,
    # num_text_tokens 152064, num_vq 1); llama.cpp-omni's talker tools agree (HIDDEN_WIDTH 768, AUDIO_VOCAB 6562,
    # audio_bos_token_id 151687). KV heads: the class default (12). text_eos_token_id: the class default; it only
    # picks one embedding row, so any id below num_text_tokens costs the same.
    tts={
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_attention_heads": 12,
        "num_key_value_heads": 12,
        "num_hidden_layers": 20,
        "num_text_tokens": 152064,
        "num_audio_tokens": 6562,
        "audio_bos_token_id": 151687,
        "text_eos_token_id": 21133,
    },
    query_num=64,  # preprocessor_config.json image_feature_size
)
SIZES = {"full": FULL, "tiny": TINY}
WINDOW = 16  # frames: the backend's max_frames
SWEEP_TOKENS = 20  # per comment while the window grows
DECODE_TOKENS = 100  # the fixed-length reply whose decoding speed is measured
PROMPT = PromptParts("You are a live sports commentator. Speak in short sentences.", "What just happened?")


def sample_clip(seconds: float, folder: Path) -> Path:
    """Moving scenes with a cut every 3 s, 1280x720 at 30 FPS."""
    scenes = [Segment(3.0, k % 6, moving=True) for k in range(max(int(seconds // 3), 1))]
    return write_video(folder / "sample.mp4", scenes, width=1280, height=720, fps=30)


def per_comment(events: list[Event]) -> list[dict[str, float]]:
    """Time to first token, first audio, tokens/s and total latency for each comment."""
    rows: dict[int, dict[str, float]] = {}
    for event in events:
        cid = getattr(event, "comment_id", None)
        if cid is None:
            continue
        row = rows.setdefault(cid, {"chars": 0.0})
        if isinstance(event, CommentaryStarted):
            row["start"], row["frames"] = event.wall, float(event.frames)
        elif isinstance(event, CommentaryDelta):
            row.setdefault("first_delta", event.wall)
            row["last_delta"], row["chars"] = event.wall, row["chars"] + len(event.text)
        elif isinstance(event, CommentaryAudio):
            row.setdefault("first_audio", event.wall)
        elif isinstance(event, CommentaryFinished):
            row["end"] = event.wall
        elif isinstance(event, Metrics):
            row["model_ttft"] = event.stages.get("model_ttft_ms", 0.0) / 1000
    out = []
    for row in rows.values():
        if "start" not in row or "end" not in row:
            continue
        decode = row.get("last_delta", row["end"]) - row.get("first_delta", row["end"])
        out.append(
            {
                "frames": row["frames"],
                "ttft_s": row.get("model_ttft") or row.get("first_delta", row["end"]) - row["start"],
                "first_audio_s": row["first_audio"] - row["start"] if "first_audio" in row else -1.0,
                "tokens_per_s": (row["chars"] / 4) / decode if decode > 0 else 0.0,  # ~4 characters a token
                "latency_s": row["end"] - row["start"],
            }
        )
    return out


def print_rows(rows: list[dict[str, float]], title: str = "") -> None:
    """The per-comment table."""
    print(f"\n{title}\n{'comment':>7} {'frames':>6} {'ttft s':>7} {'audio s':>7} {'tok/s':>6} {'total s':>7}")
    for k, r in enumerate(rows, 1):
        print(
            f"{k:>7} {r['frames']:>6.0f} {r['ttft_s']:>7.2f} {r['first_audio_s']:>7.2f} "
            f"{r['tokens_per_s']:>6.1f} {r['latency_s']:>7.2f}"
        )


def reset_vram_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def vram_peak_gb(device: torch.device) -> float:
    """Peak GPU memory since the last reset (0 on the CPU)."""
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else 0.0


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a wall-clock mark means the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the download-free bench: random weights, the real code ---


CHUNK_TOKENS = 10  # o-4.5's streaming_generate decodes 10 tokens per chunk after the first (utils.py)


class RandomModel:
    """The backends' ``load=``: the folder's architecture with random weights made on the device itself,
    built once and shared by every backend that asks. It times each frame's prefill (image processing,
    vision tower, resampler, LLM) and each decoded chunk of a text-only reply."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.model: Any = None
        self.prefill_s: list[float] = []
        self.chunk_marks: list[list[float]] = []  # per text-only reply: when each chunk came out

    def __call__(self, path: Path, dtype: torch.dtype, attn: str, vision_only: bool, device: torch.device) -> Any:
        if self.model is None:
            self.model = self._build(path, dtype, attn, device)
        return self.model

    def _build(self, path: Path, dtype: torch.dtype, attn: str, device: torch.device) -> Any:
        from transformers import AutoConfig, AutoModel

        with settings_aware_import_check():
            config = AutoConfig.from_pretrained(str(path), trust_remote_code=True)
            with device:
                model = AutoModel.from_config(
                    config, trust_remote_code=True, torch_dtype=dtype, attn_implementation=attn
                )
        model = model.eval().to(device)
        decode_plain_tokens(model, path)
        prefill, generate = model.streaming_prefill, model.streaming_generate

        def timed_prefill(**kwargs: Any) -> Any:
            image = any(isinstance(part, Image.Image) for msg in kwargs.get("msgs", []) for part in msg["content"])
            synchronize(self.device)
            started = time.perf_counter()
            out = prefill(**kwargs)
            synchronize(self.device)
            if image:
                self.prefill_s.append(time.perf_counter() - started)
            return out

        def timed_generate(**kwargs: Any) -> Iterator[Any]:
            marks: list[float] = []
            if not kwargs.get("generate_audio"):
                self.chunk_marks.append(marks)
            chunks = generate(**kwargs)
            try:
                for chunk in chunks:
                    marks.append(time.perf_counter())  # each chunk ends in .item() calls: the GPU is done
                    yield chunk
            finally:
                chunks.close()

        model.streaming_prefill, model.streaming_generate = timed_prefill, timed_generate
        return model

    def decode_tokens_per_s(self) -> float:
        """Decoding speed of the last text-only reply: 10 tokens between consecutive chunks."""
        gaps = np.diff(self.chunk_marks[-1])
        return round(CHUNK_TOKENS * len(gaps) / float(gaps.sum()), 1) if len(gaps) else 0.0


def run_comment(
    backend: MiniCPM, frames: list[Frame], comment_id: int, trigger: str, max_tokens: int, voice: bool = False
) -> list[Event]:
    """One comment straight through the backend, recorded as the pipeline's events (so ``per_comment``
    reads both modes); with ``voice`` it stops at the first audio chunk."""
    events: list[Event] = []
    request = CommentRequest(frames=frames, prompt=PROMPT, max_tokens=max_tokens, temperature=0, trigger=trigger)
    request.stream_id = "bench"

    def heard(speech: Speech) -> None:
        wall = time.perf_counter()
        events.append(
            CommentaryAudio(
                t=0, wall=wall, comment_id=comment_id, sample_rate=speech.sample_rate, samples=speech.samples
            )
        )
        request.cancel.set()

    if voice:
        request.on_audio = heard
    events.append(
        CommentaryStarted(t=0, wall=time.perf_counter(), comment_id=comment_id, trigger=trigger, frames=len(frames))
    )
    text = ""
    for delta in backend.stream(request):
        text += delta
        events.append(CommentaryDelta(t=0, wall=time.perf_counter(), comment_id=comment_id, text=delta))
    events.append(CommentaryFinished(t=0, wall=time.perf_counter(), comment_id=comment_id, text=text))
    if "model_first_token" in request.timings:
        ttft = request.timings["model_first_token"] - request.timings["model_start"]
        events.append(Metrics(t=0, comment_id=comment_id, stages={"model_ttft_ms": ttft * 1000}))
    return events


def camera_frames(count: int) -> list[Frame]:
    """1280x720 noise pictures one second apart (the model's cost does not depend on what they show)."""
    rng = np.random.default_rng(0)
    return [
        Frame(
            rng.integers(0, 256, (720, 1280, 3), np.uint8),
            media_time=float(k),
            wall_time=time.time(),
            index=k,
            source_id="bench",
        )
        for k in range(count)
    ]


def window_sweep(backend: MiniCPM, frames: list[Frame], first_id: int) -> tuple[list[dict[str, float]], int]:
    """Comments on a window growing one frame at a time, as live commentary makes them; (rows, resets)."""
    resets = backend.ledger.resets
    events: list[Event] = []
    for n in range(1, len(frames) + 1):
        events += run_comment(backend, frames[:n], first_id + n, "start" if n == 1 else "active", SWEEP_TOKENS)
    return per_comment(events), backend.ledger.resets - resets


def random_weights_bench(size: Size, device: torch.device) -> Path:
    """Build the architecture with random weights, measure through the backend, write the JSON; its path."""
    model = RandomModel(device)
    frames = camera_frames(WINDOW)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        folder = build_model_folder(Path(tmp) / "MiniCPM-o-4_5-random", "omni", size)
        reset_vram_peak(device)

        def backend(incremental: bool) -> MiniCPM:
            with token2wav_double.installed():  # its weights are not public: a double
                made = MiniCPM(
                    str(folder),
                    device=str(device),
                    precision="bf16",
                    incremental=incremental,
                    load=model,
                )
            print(f"backend: {made.description}" + (f"; voice: {made.voice_error}" if made.voice_error else ""))
            return made

        streaming = backend(incremental=True)
        synchronize(device)
        build_s = time.perf_counter() - started
        run_comment(streaming, frames[:1], 0, "start", SWEEP_TOKENS)  # warm-up: kernels, allocator, processor
        model.prefill_s.clear()
        incremental, incremental_resets = window_sweep(streaming, frames, 100)
        prefill_s = list(model.prefill_s)
        run_comment(streaming, frames[:1], 300, "start", DECODE_TOKENS)
        decode = model.decode_tokens_per_s()
        [audio] = per_comment(run_comment(streaming, frames[:1], 400, "start", SWEEP_TOKENS, voice=True))
        streaming.close()
        baseline = backend(incremental=False)
        full, full_resets = window_sweep(baseline, frames, 200)
        baseline.close()
    print_rows(incremental, "incremental prefill, window 1 → 16")
    print_rows(full, "full re-prefill every comment, window 1 → 16")
    results = {
        "model": f"MiniCPM-o 4.5 architecture from its code, random weights ({size_name(size)} size)",
        "device": str(device),
        "parameters_b": round(sum(p.numel() for p in model.model.parameters()) / 1e9, 3),
        "build_s": round(build_s, 1),
        "vram_peak_gb": vram_peak_gb(device),
        "prefill_per_frame_s": summary(prefill_s),
        "ttft_s": summary([r["ttft_s"] for r in incremental]),
        "decode_tokens_per_s": decode,
        "decode_tokens": DECODE_TOKENS,
        "first_audio_s": round(audio["first_audio_s"], 3),
        "first_audio_covers": "LLM + the real MiniCPMTTS up to audio tokens; the Token2wav vocoder is a test double",
        "comment_tokens": SWEEP_TOKENS,
        "window_incremental": [
            {"frames": int(r["frames"]), "latency_s": round(r["latency_s"], 3)} for r in incremental
        ],
        "window_full_prefill": [{"frames": int(r["frames"]), "latency_s": round(r["latency_s"], 3)} for r in full],
        "session_resets": {"incremental": incremental_resets, "full_prefill": full_resets},
    }
    name = (
        "gpu_smoke_random"
        if (size, device.type) == (FULL, "cuda")
        else f"gpu_smoke_random_{size_name(size)}_{device.type}"
    )
    return report(
        name,
        results,
        {
            "window_incremental": "flat from 1 to 16 frames (one session reset); full prefill grows with the frames",
            "first_audio_s": "<= 0.8 s, plus the vocoder's first chunk",
        },
    )


def size_name(size: Size) -> str:
    return next(name for name, known in SIZES.items() if known == size)


def checkpoint_smoke(args: argparse.Namespace, device: torch.device) -> None:
    """The published checkpoint through the whole pipeline, on a video."""
    reset_vram_peak(device)
    started = time.perf_counter()
    backend = MiniCPM(
        args.model,
        device=str(device),
        precision=args.precision,
        vision_only=args.vision_only,
        attn=args.attn,
        compile_model=args.compile,
        incremental=not args.no_incremental_prefill,
    )
    load_s = time.perf_counter() - started
    print(f"loaded {backend.description} in {load_s:.1f} s ({backend.precision_reason})")
    if backend.voice_error:
        print(f"voice: {backend.voice_error}")
    tuning = load_presets().presets[args.preset]
    speech = SpeechOptions(None) if backend.capabilities.audio_out else None
    with tempfile.TemporaryDirectory() as folder:
        video = args.video or sample_clip(args.seconds, Path(folder))
        session = Session(backend, load_profiles()["sports"], tuning, speech=speech)
        events_sub = session.bus.subscribe("smoke", maxsize=1_000_000)
        session.start(FileSource(str(video)))
        session.wait(args.seconds + 120)
        session.stop()
        events = list(events_sub)
    backend.close()
    rows = per_comment(events)
    half = len(rows) // 2
    results = {
        "model": backend.description,
        "precision_reason": backend.precision_reason,
        "load_s": round(load_s, 1),
        "warmup_s": round(backend.warmup_s, 1),
        "vram_peak_gb": vram_peak_gb(device),
        "comments": len(rows),
        "ttft_s": summary([r["ttft_s"] for r in rows]),
        "first_audio_s": summary([r["first_audio_s"] for r in rows if r["first_audio_s"] >= 0]),
        "tokens_per_s": summary([r["tokens_per_s"] for r in rows if r["tokens_per_s"] > 0]),
        "latency_s": summary([r["latency_s"] for r in rows]),
        "latency_first_half_vs_second_half_s": [
            summary([r["latency_s"] for r in rows[:half]]).get("median"),
            summary([r["latency_s"] for r in rows[half:]]).get("median"),
        ],
        "prefill_resets": backend.ledger.resets,
    }
    print_rows(rows)
    report(
        "gpu_smoke",
        results,
        {
            "ttft_s": "<= 0.3 s per comment (24 GB card, INT4)",
            "first_audio_s": "<= 0.8 s per comment",
            "latency trend": "flat as the window grows (incremental prefill)",
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "int4"])
    parser.add_argument("--vision-only", action="store_true")
    parser.add_argument("--attn", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--no-incremental-prefill", action="store_true")
    parser.add_argument("--video", type=Path)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--random-weights", action="store_true", help="no download: the architecture, random weights")
    parser.add_argument("--size", default="full", choices=sorted(SIZES), help=argparse.SUPPRESS)  # tiny: CPU tests
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_smoke: no CUDA GPU visible to torch; this script measures the GPU path", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if args.random_weights:
        random_weights_bench(SIZES[args.size], device)
    else:
        checkpoint_smoke(args, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
