"""The status strip: source state, mode, FPS, latency, backend and device, as small HTML pills."""

from __future__ import annotations

import html
import sys
from dataclasses import dataclass


@dataclass
class StatusSnapshot:
    """What the strip shows for one viewer; filled by the viewer's monitor thread."""

    source: str = "idle"
    mode: str = "idle"
    capture_fps: float = 0.0
    display_fps: float = 0.0
    latency_ms: float | None = None
    source_lag_ms: float | None = None  # camera → decoded, where the stream carries the capture time
    comments: int = 0


def device_summary() -> str:
    """GPU name and memory in use when torch sees a GPU (torch only if already imported), else CPU."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return "CPU"
    index = torch.cuda.current_device()
    used = torch.cuda.memory_allocated(index) / 2**30
    total = torch.cuda.get_device_properties(index).total_memory / 2**30
    return f"{torch.cuda.get_device_name(index)} · {used:.1f}/{total:.0f} GB"


def render_status(snapshot: StatusSnapshot | None, backend: str, device: str) -> str:
    """HTML for the strip; every value is escaped."""
    s = snapshot or StatusSnapshot()
    latency = f"{s.latency_ms / 1000:.2f} s" if s.latency_ms is not None else "–"
    pills = [
        ("source", s.source),
        ("mode", s.mode.upper()),
        ("source lag", f"{s.source_lag_ms:.0f} ms" if s.source_lag_ms is not None else "–"),
        ("capture", f"{s.capture_fps:.1f} fps"),
        ("display", f"{s.display_fps:.0f} fps"),
        ("latency", latency),
        ("comments", str(s.comments)),
        ("backend", backend),
        ("device", device),
    ]
    items = "".join(
        f'<span class="pill" data-key="{key}"><b>{key}</b> {html.escape(value)}</span>' for key, value in pills
    )
    return f'<div class="status-strip" data-source="{html.escape(s.source)}">{items}</div>'
