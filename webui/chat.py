"""Bus events → chatbot messages: comments stream in place, system notes stay small and few."""

from __future__ import annotations

from typing import Any

from pipeline.events import (
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

MAX_NOTES_PER_LINE = 4
MAX_MESSAGES = 200  # a long session must not grow the page without bound


def note_text(event: Event) -> str | None:
    """A short system note for events worth a glance, None for the rest."""
    if isinstance(event, SceneCut):
        return f"scene cut {clock(event.t)}"
    if isinstance(event, ModeChanged):
        return f"{event.mode} {clock(event.t)}"
    if isinstance(event, SourceStatus) and event.state in ("live", "stalled", "reconnecting", "ended", "failed"):
        explained = event.state in ("failed", "stalled", "reconnecting") or event.detail.startswith("back after")
        return f"source {event.state}" + (f": {event.detail}" if explained and event.detail else "")
    if isinstance(event, ErrorEvent):
        return f"⚠ {event.message}"
    return None


class ChatLog:
    """The chatbot's message list, updated event by event (not thread-safe: one consumer owns it)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._open: dict[int, int] = {}  # comment id → message index while streaming
        self._notes: list[str] = []

    def apply(self, event: Event) -> bool:
        """Update the messages; True when something visible changed."""
        if isinstance(event, CommentaryStarted):
            self._notes = []
            self.messages.append({"role": "assistant", "content": f"`{clock(event.t)}` "})
            self._open[event.comment_id] = len(self.messages) - 1
        elif isinstance(event, CommentaryDelta) and event.comment_id in self._open:
            self.messages[self._open[event.comment_id]]["content"] += event.text
        elif isinstance(event, CommentaryFinished) and event.comment_id in self._open:
            index = self._open.pop(event.comment_id)
            if event.suppressed:
                del self.messages[index]
                self._open = {k: v - 1 if v > index else v for k, v in self._open.items()}
            else:
                self.messages[index]["content"] = f"`{clock(event.t)}` {event.text}"
        elif isinstance(event, Opinion):
            mark = "🚨" if event.alert else "🔎"
            self.messages.append({"role": "assistant", "content": f"{mark} *{event.task}:* {event.text}"})
        elif (text := note_text(event)) is not None:
            self._add_note(text)
        else:
            return False
        self._trim()
        return True

    def _add_note(self, text: str) -> None:
        """Consecutive notes share one small line (the newest few), so they never flood the chat."""
        self._notes = [*self._notes, text][-MAX_NOTES_PER_LINE:]
        line = {"role": "user", "content": "<small>" + " · ".join(self._notes) + "</small>"}
        if len(self._notes) > 1 and self.messages and self.messages[-1]["role"] == "user":
            self.messages[-1] = line
        else:
            self._notes = [text]
            self.messages.append({"role": "user", "content": f"<small>{text}</small>"})

    def _trim(self) -> None:
        excess = len(self.messages) - MAX_MESSAGES
        if excess > 0 and not self._open:
            del self.messages[:excess]
