"""Two cameras sharing one MiniCPM-o 4.5 (its real code, tiny random weights, CPU): what switching costs,
and what the scheduler's stickiness saves.

MiniCPM keeps one streaming session (a KV cache) per model; a turn for another camera than the last one
starts that session over and prefills the camera's whole window again. Two cameras comment back to back
(each asks again as soon as its comment is done, the heaviest load) through the backend's scheduler, each
on its own window of frames that grows by one frame a turn, up to ``--window``; once with stickiness
(``keeps_stream_state``: the slot is held for the warm camera for what a switch costs, at most three turns
in a row) and once without (first come, first served: the cameras alternate). Figures per mode: turns,
switches, the latency of a turn after a switch and of one without (the switch cost), the wait for a turn,
and comments a minute per camera.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import report, summary

from pipeline.backends.base import CommentRequest
from pipeline.backends.minicpm import MiniCPM
from pipeline.frames import Frame
from pipeline.prompts import PromptParts
from pipeline.scheduler import Scheduler
from tests.helpers.minicpm_o45 import build_tiny_model, decode_plain_tokens

SYSTEM = "You are a live commentator. Describe the scene briefly."
NEW_TOKENS = 10


def frames_of(camera: int, count: int) -> list[Frame]:
    rng = np.random.default_rng(camera)
    return [
        Frame(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), float(i), time.time(), i, f"camera-{camera}")
        for i in range(count)
    ]


def run(backend: MiniCPM, sticky: bool, seconds: float, window: int) -> dict[str, Any]:
    """Two cameras back to back for ``seconds`` on a fresh scheduler."""
    scheduler = Scheduler(1, keeps_stream_state=sticky)
    turns: dict[bool, list[float]] = {True: [], False: []}  # switched → per-turn ms
    waits: list[float] = []
    comments = [0, 0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    failures: list[BaseException] = []

    def camera(k: int) -> None:
        frames = frames_of(k, 64)
        n = 0
        try:
            while time.monotonic() < stop:
                n += 1
                ticket = scheduler.ask(f"camera-{k}", "start" if n == 1 else "active")
                while not ticket.wait(0.1):
                    pass
                shown = frames[max(n - window, 0) : n]
                request = CommentRequest(
                    frames=shown,
                    prompt=PromptParts(system=SYSTEM, user=f"Comment on these {len(shown)} frames now."),
                    max_tokens=NEW_TOKENS,
                    temperature=0.0,
                    trigger=ticket.trigger,
                    stream_id=f"camera-{k}",
                )
                started = time.perf_counter()
                try:
                    for _ in backend.stream(request):
                        pass
                finally:
                    took = time.perf_counter() - started
                    scheduler.finish(ticket, took)
                with lock:
                    turns[ticket.switched].append(took * 1000)
                    waits.append(ticket.queue_wait * 1000)
                    comments[k] += 1
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=camera, args=(k,), name=f"bench-camera-{k}") for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    if failures:
        raise failures[0]
    cost = scheduler.cost.seconds
    return {
        "turns": scheduler.turns,
        "switches": scheduler.switches,
        "switched_turn_ms": summary(turns[True]),
        "same_camera_turn_ms": summary(turns[False]),
        "switch_cost_ms": round(cost * 1000, 1) if cost is not None else None,
        "queue_wait_ms": summary(waits),
        "comments_per_min_per_camera": [round(c * 60 / seconds, 1) for c in comments],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=40.0, help="seconds per mode")
    parser.add_argument("--window", type=int, default=8, help="frames a comment looks at, at most")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"threads": args.threads, "window": args.window, "seconds_per_mode": args.seconds}
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_model(Path(tmp) / "o45", "vision")
        backend = MiniCPM(model=str(path), device="cpu")
        decode_plain_tokens(backend._model, path)
        try:
            results["backend"] = backend.description
            for sticky in (False, True):
                mode = "sticky" if sticky else "first come, first served"
                figures = run(backend, sticky, args.seconds, args.window)
                results[mode] = figures
                print(
                    f"{mode:>26}: {figures['turns']} turns, {figures['switches']} switches, "
                    f"switched turn {figures['switched_turn_ms'].get('median')} ms vs same camera "
                    f"{figures['same_camera_turn_ms'].get('median')} ms, "
                    f"wait p90 {figures['queue_wait_ms'].get('p90')} ms, "
                    f"{figures['comments_per_min_per_camera']} comments/min"
                )
        finally:
            backend.close()
    report(
        "scheduler",
        results,
        {
            "sticky": "fewer switches and more comments a minute than first come, first served, "
            "with every wait under the scheduler's bound (10 s)"
        },
    )


if __name__ == "__main__":
    main()
