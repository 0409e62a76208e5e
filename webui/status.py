"""The status strip: source state, mode, FPS, latency, backend and device, as small HTML pills; with watch
rules, the alerts and rule checks, and each alert delivery's state."""

from __future__ import annotations

import html
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.consumers.base import Consumer
from pipeline.events import (
    Alert,
    CommentaryFinished,
    DeliveryStatus,
    Event,
    Metrics,
    ModeChanged,
    RuleCheck,
    SourceStatus,
)

CHECKS_SPAN = 60.0  # media seconds of rule checks the strip counts ("checks a minute")


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
    alerts: int = 0  # alerts started in this run
    alerts_on: set[str] = field(default_factory=set)  # rules whose alert is on now
    checks: deque[float] = field(default_factory=deque)  # media times of the rule checks in the last minute
    deliveries: dict[str, DeliveryStatus] = field(default_factory=dict)  # each delivery's newest status


class StatusFeed(Consumer):
    """The numbers of a tab's status strip, from the bus; each comment's latency also goes to
    ``on_latency`` (the live view's sync delay), and ``on_alert`` hears when a rule's alert went on or off
    (the rules box shows it)."""

    name = "status"
    wants = (SourceStatus, ModeChanged, Metrics, CommentaryFinished, RuleCheck, Alert, DeliveryStatus)

    def __init__(
        self,
        snapshot: StatusSnapshot,
        on_latency: Callable[[float], None],
        on_alert: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__()
        self.snapshot, self.on_latency, self.on_alert = snapshot, on_latency, on_alert

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
        elif isinstance(event, RuleCheck):
            checks = self.snapshot.checks
            checks.append(event.t)
            while checks and checks[0] < event.t - CHECKS_SPAN:
                checks.popleft()
        elif isinstance(event, Alert):
            self.snapshot.alerts += event.state == "started"
            (self.snapshot.alerts_on.add if event.state == "started" else self.snapshot.alerts_on.discard)(event.rule)
            self.on_alert()
        elif isinstance(event, DeliveryStatus):
            self.snapshot.deliveries[event.name] = event


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
    "alerts": "Alerts from your watch rules in this run; ON while one holds.",
    "checks": "Watch-rule checks in the last minute of video: each asks the model about every active rule.",
    "delivery": "Where alerts are sent: sent so far, waiting to be sent (queued) and lost while it was down.",
}


def delivery_words(status: DeliveryStatus) -> str:
    """The delivery's state and counts: "ok · 3 sent", "down · 2 queued", "retrying · 5 sent · 1 queued"."""
    counts = [(status.sent, "sent"), (status.queued, "queued"), (status.dropped, "dropped")]
    shown = [f"{n} {word}" for n, word in counts if n or (word == "sent" and not status.queued)]
    return " · ".join([status.state, *shown])


def pill(key: str, label: str, value: str, hint: str, state: str = "") -> str:
    """One pill; ``state`` (ok, retrying, down, on) colours it."""
    marked = f' data-state="{html.escape(state)}"' if state else ""
    return (
        f'<span class="pill" data-key="{html.escape(key)}"{marked} title="{html.escape(hint)}">'
        f"<b>{html.escape(label)}</b> {html.escape(value)}</span>"
    )


def watch_pills(s: StatusSnapshot) -> list[str]:
    """Alerts, checks a minute and each delivery, once there is something to say (rules were checked)."""
    if not (s.checks or s.alerts or s.deliveries):
        return []
    on = len(s.alerts_on)
    pills = [
        pill("alerts", "alerts", f"{s.alerts}" + (f" · {on} ON" if on else ""), HINTS["alerts"], "on" if on else ""),
        pill("checks", "checks", f"{len(s.checks)}/min", HINTS["checks"]),
    ]
    for status in list(s.deliveries.values()):  # a copy: the feed's thread may add one meanwhile
        hint = f"{HINTS['delivery']} {status.detail}".strip()
        pills.append(pill(f"delivery-{status.name}", status.name, delivery_words(status), hint, status.state))
    return pills


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
    plain = [pill(key, label, value, HINTS[key]) for key, label, value in pills]
    items = "".join([*plain[:-2], *watch_pills(s), *plain[-2:]])  # the model and the device stay last
    return f'<div class="status-strip" data-source="{html.escape(s.source)}">{items}</div>'
