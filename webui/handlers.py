"""Gradio event handlers as plain functions of (manager, tab key, inputs), so tests call them directly.

``webui.app`` wraps each with the tab's ``gr.Request.session_hash``; nothing here imports gradio,
except ``gradio.Error`` raised to show the user a clear message in a toast.
"""

from __future__ import annotations

import html
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from pipeline.errors import OnlookerError
from pipeline.speech.engines import Speech
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
    """Stream the session's paced speech (steady ~1 s chunks) to the autoplaying audio player."""
    viewer = manager.get(key)
    if viewer is None or viewer.session.speaker is None:
        return
    for chunk in viewer.session.speaker.outputs():
        viewer.narration.add(chunk.media_time, Speech(chunk.sample_rate, chunk.samples))
        yield chunk.sample_rate, chunk.samples


def save_narration(manager: SessionManager, key: str) -> dict[str, Any]:
    """This tab's narration so far as one WAV on the media timeline (mux it onto the source)."""
    viewer = manager.get(key)
    if viewer is None or viewer.narration.sample_rate is None:
        raise gr.Error("Nothing has been spoken yet in this tab.", print_exception=False)
    folder = Path(tempfile.mkdtemp(prefix="onlooker-narration-"))
    summary = viewer.narration.save(folder / "narration.wav", viewer.session.media_now())
    if viewer.narration.truncated:
        gr.Warning("Only the first hour of narration is kept; later speech is not in the file.")
    gr.Info(f"Narration saved: {summary}")
    return gr.update(value=str(folder / "narration.wav"), visible=True)


ENGINE_LABELS = {
    "model": "the model's own voice",
    "espeak": "espeak-ng (offline)",
    "openai": "OpenAI-compatible server",
}


def engine_choices(manager: SessionManager) -> list[tuple[str, str]]:
    return [(ENGINE_LABELS.get(name, name), name) for name in manager.speech.engines]


def voice_settings(manager: SessionManager, key: str) -> dict[str, Any]:
    """The voice dropdown for this tab's engine: its voices, the current pick, off when there is none."""
    prefs = manager.voice_prefs(key)
    voices = manager.voices(prefs.engine)
    engine = manager.speech.engines.get(prefs.engine or "")
    current = prefs.voice or (engine.default_voice if engine is not None else None)
    return {"choices": voices, "value": current if current in voices else None, "interactive": bool(voices)}


def change_engine(manager: SessionManager, key: str, engine: str | None) -> dict[str, Any]:
    """Switch this tab's speech engine (its voice goes back to the profile's); refresh the voice list."""
    try:
        manager.set_voice(key, engine or None, None)
    except OnlookerError as exc:
        raise gr.Error(str(exc), print_exception=False) from None
    return gr.update(**voice_settings(manager, key))


def change_voice(manager: SessionManager, key: str, engine: str | None, voice: str | None) -> None:
    try:
        manager.set_voice(key, engine or None, voice or None)
    except OnlookerError as exc:
        raise gr.Error(str(exc), print_exception=False) from None


def set_muted(manager: SessionManager, key: str, muted: bool) -> None:
    """Mute (nothing is synthesised, and the commentary is no longer paced by speech) or unmute."""
    manager.set_muted(key, bool(muted))


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


def voice_instruction(
    manager: SessionManager, key: str, recording: tuple[int, np.ndarray] | None
) -> tuple[str | dict[str, Any], None]:
    """A spoken instruction: transcribe it and send it on, like a typed one. Returns (instruction
    box, cleared recorder); when no session takes it, the words wait in the box, never lost."""
    if recording is None:
        return gr.update(), None
    if manager.transcriber is None:
        raise gr.Error(manager.stt_reason, print_exception=False)
    try:
        text = manager.transcriber.transcribe(*recording)
    except OnlookerError as exc:
        raise gr.Error(str(exc), title="Could not hear the instruction", print_exception=False) from None
    if not manager.instruct(key, text):
        gr.Warning(f"Heard “{text}”. Start a source first; the instruction is kept in the box.")
        return text, None
    gr.Info(f"Heard: {text}")
    return "", None


def instruct(manager: SessionManager, key: str, text: str) -> str:
    """Send a live instruction; the box empties when it was taken, and keeps the text otherwise."""
    if not text.strip():
        return ""
    if not manager.instruct(key, text):
        gr.Warning("Start a source first; the instruction is kept in the box.")
        return text
    gr.Info(f"Next comments will: {text.strip()}")
    return ""
