"""Gradio event handlers as plain functions of (manager, tab key, inputs), so tests call them directly.

``webui.app`` wraps each with the tab's ``gr.Request.session_hash``; nothing here imports gradio,
except ``gradio.Error`` raised to show the user a clear message in a toast.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
import numpy as np

from pipeline.errors import OnlookerError
from webui.chat import ChatLog
from webui.sessions import SessionManager, SourceRequest
from webui.status import device_summary, render_status

IDLE_LIVE = '<div class="live-idle"><span>Pick a source and press <b>Start</b>.</span></div>'
YIELD_EVERY = 0.05  # seconds: at most ~20 chatbot updates a second, however fast tokens come


def live_html(token: str) -> str:
    """The live view: an <img> on this viewer's MJPEG endpoint (relative, so share links work)."""
    return f'<img class="live-view" src="onlooker/live/{html.escape(token)}.mjpg" alt="live view of the source">'


def status_html(manager: SessionManager, key: str) -> str:
    viewer = manager.get(key)
    return render_status(viewer.snapshot() if viewer else None, manager.choice.backend.description, device_summary())


def start(
    manager: SessionManager, key: str, mode: str, upload: str | None, url: str | None, profile: str, preset: str
) -> tuple[str, str, list[dict[str, Any]]]:
    """Start this tab's pipeline: (live view HTML, status HTML, emptied chat). Bad input → gr.Error."""
    try:
        viewer = manager.start(key, SourceRequest(mode, upload, url), profile, preset)
    except OnlookerError as exc:
        raise gr.Error(str(exc), title="Cannot start", print_exception=False) from None
    return live_html(viewer.token), status_html(manager, key), []


def stop(manager: SessionManager, key: str) -> tuple[str, str]:
    manager.stop(key)
    return IDLE_LIVE, status_html(manager, key)


def close_tab(manager: SessionManager, key: str) -> None:
    """The tab went away: tear its pipeline down (threads, subprocesses, memory)."""
    manager.forget(key)


def commentary(manager: SessionManager, key: str) -> Iterator[list[dict[str, Any]]]:
    """Stream the chat as comments arrive; ends when the session ends."""
    viewer = manager.get(key)
    if viewer is None:
        return
    chat = ChatLog()
    last = 0.0
    pending = False
    while True:
        event = viewer.chat.get(timeout=YIELD_EVERY)
        if event is not None:
            pending = chat.apply(event) or pending
        elif viewer.chat.closed:
            break
        now = time.monotonic()
        if pending and now - last >= YIELD_EVERY:
            last, pending = now, False
            yield [dict(m) for m in chat.messages]
    yield [dict(m) for m in chat.messages]


def speech(manager: SessionManager, key: str) -> Iterator[tuple[int, np.ndarray]]:
    """Stream spoken comments to the autoplaying audio player."""
    viewer = manager.get(key)
    if viewer is None:
        return
    yield from manager.speech_chunks(viewer)


def webcam_frame(manager: SessionManager, key: str, image: np.ndarray | None) -> None:
    """A frame from the browser webcam; ignored until Start has made a webcam session."""
    viewer = manager.get(key)
    if viewer is not None and image is not None:
        viewer.push(np.ascontiguousarray(image[..., :3]))


def change_profile(manager: SessionManager, key: str, name: str) -> None:
    try:
        manager.set_profile(key, name)
    except OnlookerError as exc:
        raise gr.Error(str(exc), print_exception=False) from None


def change_preset(manager: SessionManager, key: str, name: str) -> None:
    try:
        manager.set_preset(key, name)
    except OnlookerError as exc:
        raise gr.Error(str(exc), print_exception=False) from None


def set_sync(manager: SessionManager, key: str, on: bool) -> None:
    """Switch the live picture's delay-for-sync on or off for this tab (now and for later starts)."""
    manager.set_sync(key, bool(on))


def instruct(manager: SessionManager, key: str, text: str) -> str:
    """Send a live instruction; the box empties when it was taken, and keeps the text otherwise."""
    if not text.strip():
        return ""
    if not manager.instruct(key, text):
        gr.Warning("Start a source first; the instruction is kept in the box.")
        return text
    gr.Info(f"Next comments will: {text.strip()}")
    return ""
