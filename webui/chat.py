"""Bus events → the page's chat operations: comments stream in place, notes stay small and few.

The page (``webui/client.js``) renders them: one bubble per comment with its media time, system
notes as small centred lines, second opinions as marked bubbles, a watch rule's alert as a bubble of its
own with the snapshot inline (and a sound and a notification), its clearing as a note. A failure is not
a chat note: it goes to the live area (``problem``), so it is said once, where the picture would be. Rule
checks are not shown: there are several a second; the status strip counts them.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from pipeline.consumers.base import Consumer
from pipeline.events import (
    Alert,
    CommentaryDelta,
    CommentaryFinished,
    CommentaryStarted,
    ErrorEvent,
    Event,
    ModeChanged,
    Opinion,
    SceneCut,
    SourceStatus,
    clock,
)
from pipeline.jpeg import encode_jpeg
from webui.channel import TabChannel

SNAPSHOT_SIDE = 640  # the chat shows the alert's snapshot this wide at most: a small message, a sharp bubble
MODE_NOTES = {"active": "things are moving: commenting more often", "idle": "quiet scene: commenting less often"}


def note_text(event: Event) -> str | None:
    """A short system note for events worth a glance, None for the rest."""
    if isinstance(event, SceneCut):
        return f"{clock(event.t)} · scene cut"
    if isinstance(event, ModeChanged):
        return f"{clock(event.t)} · {MODE_NOTES.get(event.mode, event.mode)}"
    if isinstance(event, SourceStatus) and event.state in ("stalled", "reconnecting", "ended"):
        return f"{clock(event.t)} · source {event.state}" + (f": {event.detail}" if event.detail else "")
    if isinstance(event, SourceStatus) and event.state == "live" and event.detail.startswith("back after"):
        return f"{clock(event.t)} · source live again ({event.detail})"
    if isinstance(event, ErrorEvent) and not event.fatal:
        return f"{clock(event.t)} · ⚠ {event.message}"
    return None


def snapshot_url(jpeg: bytes) -> str:
    """The alert's snapshot as a ``data:`` URL for the page's ``<img>``: it goes with the alert's message, so the
    picture can never belong to another alert or run; shrunk to ``SNAPSHOT_SIDE`` (the watcher keeps 1280)."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is not None and max(image.shape[:2]) > SNAPSHOT_SIDE:
        jpeg = encode_jpeg(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), 85, SNAPSHOT_SIDE)
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def alert_op(event: Alert) -> dict[str, Any]:
    """An alert that started (with its snapshot) or cleared (a note on the page, no picture)."""
    op = {
        "type": "alert",
        "id": event.alert_id,
        "state": event.state,
        "rule": event.rule,
        "text": event.text,
        "clock": clock(event.t),
        "reason": event.reason,
        "confidence": round(event.confidence, 2),
    }
    if event.state == "started" and event.jpeg:
        op["image"] = snapshot_url(event.jpeg)
    return op


def chat_op(event: Event) -> dict[str, Any] | None:
    """The page operation for one event, or None when the chat does not show it."""
    if isinstance(event, CommentaryStarted):
        return {"type": "comment", "id": event.comment_id, "clock": clock(event.t)}
    if isinstance(event, CommentaryDelta):
        return {"type": "delta", "id": event.comment_id, "text": event.text}
    if isinstance(event, CommentaryFinished):
        if event.suppressed:
            return {"type": "drop", "id": event.comment_id}
        return {"type": "final", "id": event.comment_id, "clock": clock(event.t), "text": event.text}
    if isinstance(event, Alert):
        return alert_op(event)
    if isinstance(event, Opinion):
        return {"type": "opinion", "alert": event.alert, "task": event.task, "text": event.text}
    if isinstance(event, ErrorEvent) and event.fatal:  # a failed source publishes this too, with the same words
        return {"type": "problem", "text": event.message or "the session failed"}
    if (text := note_text(event)) is not None:
        return {"type": "note", "text": text}
    return None


class ChatFeed(Consumer):
    """A tab's chat: every event's page operation, in order, to one run of the tab's channel. When the bus
    closes on its own (the source ended and everything was said), the page hears that the run ended, with
    ``error()``'s reason if it failed; after a Stop it hears nothing more."""

    name = "chat"

    def __init__(self, channel: TabChannel, run: int, error: Callable[[], str | None]) -> None:
        super().__init__()
        self.channel, self.run, self.error = channel, run, error

    def handle(self, event: Event) -> None:
        if (op := chat_op(event)) is not None:
            self.channel.send(op, self.run)

    def drain(self) -> None:
        self.channel.send({"type": "ended", "error": self.error() or ""}, self.run)
