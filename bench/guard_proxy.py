"""What the shared app's guard costs an HLS stream: the URL guard reads the playlist first and every request
FFmpeg makes goes through the guard's loopback proxy (``pipeline/sources/guard_proxy.py``).

A 1280×720 30 FPS HLS stream (2 s segments, 4 Mbit/s) is served by a real HTTP server on loopback
(``tests/helpers/static_server.py``) and opened by the real stream source, locally (no guard) and as a shared
app would (guard on, the server allowed with ``--allow-hosts``), alternately. Measured where the frames
arrive: Start → first frame handed on, and the process's CPU for reading the whole stream (paced at its real
rate, decoding included), per second of video; and, without decoding, the proxy's cost per request from
FFmpeg demuxing the same stream both ways.

    python bench/guard_proxy.py [--seconds 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from common import report, summary  # first: puts the repository and tests/ on sys.path

# isort: split
import av

from pipeline.sources.guard import UrlGuard
from pipeline.sources.guard_proxy import GuardProxy
from pipeline.sources.stream import StreamSource
from tests.helpers.static_server import serving

GOALS = {"first_frame_added_ms": "<= 100 (the guard's playlist read and the proxy, at Start)"}


def make_stream(folder: Path, seconds: int) -> int:
    """The HLS stream; returns how many segments it has."""
    cmd = ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-t", str(seconds),
           "-c:v", "libx264", "-preset", "veryfast", "-b:v", "4M", "-g", "30", "-hls_time", "2",
           "-hls_playlist_type", "vod", str(folder / "index.m3u8")]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=300)
    return len(list(folder.glob("*.ts")))


def play(url: str, guard: UrlGuard | None) -> tuple[float, float, int]:
    """(Start → first frame in ms, CPU seconds, frames) for the whole stream through the real source."""
    first: list[float] = []
    frames = [0]
    done = threading.Event()

    def frame(_: object) -> None:
        frames[0] += 1
        if not first:
            first.append(time.monotonic())

    source = StreamSource(url, timeout=10, guard=guard)
    cpu, started = time.process_time(), time.monotonic()
    source.start(frame, lambda state, detail: done.set() if state in ("ended", "failed") else None)
    done.wait(600)
    source.stop()
    return (first[0] - started) * 1000 if first else float("nan"), time.process_time() - cpu, frames[0]


def demux(url: str, options: dict[str, str]) -> float:
    """Wall seconds for FFmpeg to read every packet (no decoding)."""
    started = time.perf_counter()
    with av.open(url, options=options, timeout=10) as container:
        for _ in container.demux(video=0):
            pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, serving(Path(tmp)) as served:
        url = f"{served.url}/index.m3u8"
        segments = make_stream(Path(tmp), args.seconds)
        shared = UrlGuard.build(True, url.split("/")[2])
        first = {"local": [], "shared": []}
        cpu = {"local": [], "shared": []}
        per_request = []
        for _ in range(args.runs):
            for name, guard in (("local", None), ("shared", shared)):
                ms, seconds, frames = play(url, guard)
                assert frames >= args.seconds * 30 * 0.95, f"{name}: {frames} frames"
                first[name].append(ms)
                cpu[name].append(100 * seconds / args.seconds)
            direct = demux(url, {})
            with GuardProxy(shared, timeout=10) as proxy:
                proxied = demux(url, proxy.ffmpeg_options)
            per_request.append(1000 * (proxied - direct) / (segments + 1))
    added = [s - local for s, local in zip(first["shared"], first["local"], strict=True)]
    report(
        "guard_proxy",
        {
            "stream": f"1280x720 30 FPS, 4 Mbit/s, {args.seconds} s in {segments} segments of 2 s",
            "first_frame_local_ms": summary(first["local"]),
            "first_frame_shared_ms": summary(first["shared"]),
            "first_frame_added_ms": summary(added),
            "cpu_local_pct_of_core": summary(cpu["local"]),
            "cpu_shared_pct_of_core": summary(cpu["shared"]),
            "proxy_ms_per_request": summary(per_request),
        },
        GOALS,
    )


if __name__ == "__main__":
    main()
