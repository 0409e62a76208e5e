"""The OpenAI-compatible backend against a local llama.cpp server: throughput and latency with 1, 4 and 8
concurrent sessions, and the overhead Onlooker adds per frame (resize + JPEG + base64 + request JSON, and
the loopback HTTP round trip). Goal: overhead <= 10 ms per 1280x720 frame.

    python bench/openai_engine.py                          # starts llama-cpp-python on the tiny test model
    python bench/openai_engine.py --base-url http://host:8000/v1 --seconds 60   # your own engine

Without --base-url it serves the tiny random Qwen2-VL the tests build (``tests/helpers/gguf_models.py``), which
needs ``scripts/setup.sh --dev``; the figures then describe the plumbing, not a real model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
from common import report, summary

from pipeline.backends.base import CommentRequest
from pipeline.backends.openai_compat import OpenAICompatible, build_messages
from pipeline.errors import BackendError
from pipeline.frames import Frame
from pipeline.prompts import PromptParts
from pipeline.scheduler import scheduler_for


def frame_720p(seed: int) -> Frame:
    rng = np.random.default_rng(seed)
    image = np.repeat(np.repeat(rng.integers(0, 255, (45, 80, 3), dtype=np.uint8), 16, 0), 16, 1)  # blocky, like video
    return Frame(image, media_time=float(seed), wall_time=time.time(), index=seed, source_id="bench")


def request(frames: int, max_tokens: int) -> CommentRequest:
    return CommentRequest(
        frames=[frame_720p(k) for k in range(frames)],
        prompt=PromptParts("You comment on live video.", "What is happening now?"),
        max_tokens=max_tokens,
        temperature=0,
    )


def overhead(backend: OpenAICompatible, base_url: str, runs: int = 30) -> dict[str, object]:
    """Milliseconds Onlooker spends per frame before the engine sees it."""
    encode, body = [], []
    for k in range(runs):
        req = request(1, 16)
        started = time.perf_counter()
        messages = build_messages(req, backend.image_max_side, backend.jpeg_quality)
        encode.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        json.dumps({"model": backend.model, "messages": messages, "stream": True})
        body.append((time.perf_counter() - started) * 1000)
        del k
    with httpx.Client(timeout=10, trust_env=False) as client:
        trips = []
        for _ in range(runs):
            started = time.perf_counter()
            client.get(f"{base_url}/models").raise_for_status()
            trips.append((time.perf_counter() - started) * 1000)
    total = [e + b + t for e, b, t in zip(encode, body, trips, strict=True)]
    return {
        "encode_ms": summary(encode),
        "json_ms": summary(body),
        "http_round_trip_ms": summary(trips),
        "per_frame_ms": summary(total),
    }


def load(backend: OpenAICompatible, sessions: int, seconds: float, frames: int, max_tokens: int) -> dict[str, object]:
    """``sessions`` cameras commenting back to back for ``seconds`` through the backend's scheduler (as
    the app does): comments, latency, the wait for a turn."""
    latencies: list[float] = []
    first: list[float] = []
    waits: list[float] = []
    failed = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    scheduler = scheduler_for(backend)

    def session(k: int) -> None:
        nonlocal failed
        while time.monotonic() < stop:
            ticket = scheduler.ask(f"camera-{k}", "active")
            while not ticket.wait(0.1):
                pass
            req = request(frames, max_tokens)
            started = time.perf_counter()
            try:
                for _ in backend.stream(req):
                    pass
            except BackendError:
                with lock:
                    failed += 1
                continue
            finally:
                scheduler.finish(ticket)
            with lock:
                waits.append(ticket.queue_wait)
                latencies.append(time.perf_counter() - started)
                if "model_first_token" in req.timings:
                    first.append(req.timings["model_first_token"] - req.timings["model_start"])

    threads = [threading.Thread(target=session, args=(k,), name=f"bench-session-{k}") for k in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "sessions": sessions,
        "comments": len(latencies),
        "comments_per_min": round(len(latencies) * 60 / seconds, 1),
        "latency_s": summary(latencies),
        "first_token_s": summary(first),
        "queue_wait_s": summary(waits),
        "failed": failed,
    }


@contextlib.contextmanager
def engine(base_url: str | None) -> Iterator[str]:
    if base_url:
        yield base_url
        return
    from tests.helpers.gguf_models import tiny_gguf_qwen2vl
    from tests.helpers.llama_server import LlamaServer

    model, mmproj = tiny_gguf_qwen2vl()
    with LlamaServer(model, mmproj) as server:
        yield server.base_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    parser.add_argument("--seconds", type=float, default=20.0, help="per concurrency level")
    parser.add_argument("--frames", type=int, default=2, help="frames per comment")
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args()
    with engine(args.base_url) as base_url:
        results: dict[str, object] = {"engine": base_url}
        for sessions in (1, 4, 8):
            backend = OpenAICompatible(base_url, model=args.model, max_in_flight=sessions, max_frames=args.frames)
            if sessions == 1:
                results["model"] = backend.model
                results["image_tokens_per_frame"] = backend.image_tokens
                results["overhead"] = overhead(backend, base_url)
            results[f"sessions_{sessions}"] = load(backend, sessions, args.seconds, args.frames, args.max_tokens)
            backend.close()
    report(
        "openai_engine",
        results,
        {"overhead.per_frame_ms": "<= 10 ms at the median for a 1280x720 frame (resize, JPEG, base64, JSON, HTTP)"},
    )


if __name__ == "__main__":
    main()
