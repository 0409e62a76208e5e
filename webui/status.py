"""The status strip: source state, mode, FPS, latency, backend and device, as small HTML pills."""

from __future__ import annotations

import html
import sys
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.consumers.base import Consumer
from pipeline.events import CommentaryFinished, Event, Metrics, ModeChanged, SourceStatus


@dataclass
class StatusSnapshot:
    """What the strip shows for one viewer; filled by its ``StatusFeed``."""

    source: str = "idle"
    mode: str = "idle"
    capture_fps: float = 0.0
    display_fps: float = 0.0
    latency_ms: float | None = None
    source_lag_ms: float | None = None  # camera → decoded, where the stream carries the capture time
    comments: int = 0


class StatusFeed(Consumer):
    """The numbers of a tab's status strip, from the bus; each comment's latency also goes to
    ``on_latency`` (the live view's sync delay)."""

    name = "status"
    wants = (SourceStatus, ModeChanged, Metrics, CommentaryFinished)

    def __init__(self, snapshot: StatusSnapshot, on_latency: Callable[[float], None]) -> None:
        super().__init__()
        self.snapshot, self.on_latency = snapshot, on_latency

    def handle(self, event: Event) -> None:
        if isinstance(event, SourceStatus):
            self.snapshot.source = event.state
        elif isinstance(event, ModeChanged):
            self.snapshot.mode = event.mode
        elif isinstance(event, Metrics) and "frame_to_first_delta_ms" in event.stages:
            latency = event.stages["frame_to_first_delta_ms"]
            self.snapshot.latency_ms = latency
            self.on_latency(latency / 1000)
        elif isinstance(event, CommentaryFinished) and not event.suppressed:
            self.snapshot.comments += 1


def device_summary() -> str:
    """GPU name and memory in use when torch sees a GPU (torch only if already imported), else CPU."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return "CPU"
    index = torch.cuda.current_device()
    used = torch.cuda.memory_allocated(index) / 2**30
    total = torch.cuda.get_device_properties(index).total_memory / 2**30
    return f"{torch.cuda.get_device_name(index)} · {used:.1f}/{total:.0f} GB"


SOURCE_WORDS = {
    "idle": "not started",
    "connecting": "connecting…",
    "live": "live",
    "stalled": "no new frames",
    "reconnecting": "reconnecting…",
    "ended": "finished",
    "failed": "failed",
}
MODE_WORDS = {"idle": "calm", "active": "busy"}
HINTS = {
    "source": "Is the video coming in? live: frames arriving; no new frames: the camera froze; reconnecting: "
    "the stream dropped and Onlooker is retrying; finished: the file or stream ended.",
    "mode": "How much is happening: busy (motion, cuts) means a comment every few seconds; calm means fewer.",
    "source lag": "How old each frame is when Onlooker decodes it (camera → here). Only RTSP cameras with a "
    "synced clock say when a frame was taken; '–' otherwise.",
    "capture": "Frames per second Onlooker looks at for the commentary (set by the preset).",
    "display": "Frames per second sent to this page's live picture.",
    "latency": "From the newest frame a comment looked at to its first word: how far the words trail the picture.",
    "comments": "Comments made in this run.",
    "backend": "What writes the commentary.",
    "device": "Where the model runs, and the GPU memory in use.",
}


def render_status(snapshot: StatusSnapshot | None, backend: str, device: str) -> str:
    """HTML for the strip: plain words, a hover text on every pill; every value is escaped."""
    s = snapshot or StatusSnapshot()
    latency = f"{s.latency_ms / 1000:.1f} s" if s.latency_ms is not None else "–"
    pills = [
        ("source", "video", SOURCE_WORDS.get(s.source, s.source)),
        ("mode", "scene", MODE_WORDS.get(s.mode, s.mode)),
        ("source lag", "camera lag", f"{s.source_lag_ms:.0f} ms" if s.source_lag_ms is not None else "–"),
        ("capture", "looking at", f"{s.capture_fps:.1f} fps"),
        ("display", "showing", f"{s.display_fps:.0f} fps"),
        ("latency", "words trail by", latency),
        ("comments", "comments", str(s.comments)),
        ("backend", "model", backend),
        ("device", "on", device),
    ]
    items = "".join(
        f'<span class="pill" data-key="{key}" title="{html.escape(HINTS[key])}">'
        f"<b>{label}</b> {html.escape(value)}</span>"
        for key, label, value in pills
    )
    return f'<div class="status-strip" data-source="{html.escape(s.source)}">{items}</div>'
