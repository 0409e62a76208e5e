"""Gradio event handlers as plain functions of (manager, tab key, inputs), so tests call them directly.

``webui.app`` wraps each with the tab's ``gr.Request.session_hash``. Live output (picture, speech,
chat, status) goes through the tab's channel, not through Gradio outputs; a failed Start is said
once, in the live area, via the channel. Toasts (``gr.Info``/``gr.Warning``/``gr.Error``) are for
answers to the controls.
"""

from __future__ import annotations

import html
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from pipeline.config import pick
from pipeline.errors import OnlookerError
from pipeline.settings_file import save_path, shown_path, write_defaults
from webui.rules import ACTIONS, TabRules
from webui.sessions import SessionManager
from webui.sources import SourceRequest
from webui.status import device_summary, render_status


def status_html(manager: SessionManager, key: str) -> str:
    viewer = manager.get(key)
    return render_status(viewer.snapshot() if viewer else None, manager.choice.backend.description, device_summary())


def first_rules_html(manager: SessionManager) -> str:
    """The rules box as a page first shows it: the ``--watch`` rules (each tab's own box comes down its channel).
    Built, not kept: no tab owns it."""
    return TabRules(manager.settings, manager.choice.backend.rule_problem).html(())


def open_tab(manager: SessionManager, key: str) -> str:
    """On page load: the tab's channel token, which ``webui/client.js`` picks up to open its WebSocket; the
    tab's rules box goes down that channel."""
    token = html.escape(manager.tab(key).token)
    manager.show_rules(key)
    return f'<div id="onlooker-tab" data-token="{token}" hidden></div>'


def start(
    manager: SessionManager, key: str, mode: str, upload: str | None, url: str | None, profile: str, preset: str
) -> None:
    """Start this tab's pipeline as a new run; bad input is shown in the live area (via the channel)."""
    try:
        manager.start(key, SourceRequest(mode, upload, url), profile, preset)
    except OnlookerError as exc:
        manager.tab(key).send({"type": "failed", "text": str(exc)})
    manager.show_rules(key)  # the new session's rules (a profile's too), or no alert on after a failed Start


def stop(manager: SessionManager, key: str) -> None:
    manager.stop(key)
    manager.show_rules(key)  # no alert is on any more


def add_rule(manager: SessionManager, key: str, text: str) -> str:
    """The rules box's Add: the rule goes to the tab's rules (and its running session's, at once). Returns the
    box's text: empty once added; kept when refused, the reason shown under it."""
    if not text.strip():
        return ""
    added = manager.rules(key).add(text)
    manager.show_rules(key)
    return "" if added else text


def rule_button(manager: SessionManager, key: str, asked: dict[str, Any]) -> None:
    """A rule's Pause, Resume or Remove, as the page sends it on its channel: ``{"do": ..., "rule": name}``."""
    action, name = asked.get("do"), asked.get("rule")
    if action in ACTIONS and isinstance(name, str):
        manager.rules(key).act(action, name)
        manager.show_rules(key)


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


def profile_info(manager: SessionManager, name: str) -> str:
    """The one line under the profile picker: what this commentator is like."""
    profile = manager.profiles.get(name)
    return profile.description if profile is not None and profile.description else "How the commentary sounds."


def preset_info(manager: SessionManager, name: str) -> str:
    """The one line under the preset picker: how often it looks and talks."""
    tuning = manager.presets.presets.get(name)
    return tuning.description if tuning is not None and tuning.description else "How often Onlooker looks and talks."


def instruction_info(manager: SessionManager) -> str:
    if getattr(manager.choice.backend, "understands", None) is not None:
        return "The offline narrator understands regions, people, motion, light and colour; a model follows anything."
    return "Press Enter; the next comments follow it."


def change_profile(manager: SessionManager, key: str, name: str) -> dict[str, Any]:
    """A running session switches at once; the line under the picker describes the new profile."""
    try:
        manager.set_profile(key, name)
    except OnlookerError as exc:
        raise gr.Error(str(exc), print_exception=False) from None
    return gr.update(info=profile_info(manager, name))


def change_preset(manager: SessionManager, key: str, name: str) -> dict[str, Any]:
    try:
        manager.set_preset(key, name)
    except OnlookerError as exc:
        raise gr.Error(str(exc), print_exception=False) from None
    return gr.update(info=preset_info(manager, name))


def save_defaults(
    manager: SessionManager,
    key: str,
    mode: str,
    url: str | None,
    profile: str,
    preset: str,
    engine: str | None,
    mute: bool,
    sync: bool,
) -> None:
    """Save as default: the page's source, profile, preset, speech, sync and this tab's watch rules go into the
    settings file (``--config``, else the one read, else the user's), so the next start opens with them.

    The speech engine is saved as ``auto`` when it is what ``auto`` picked, so a later start with a model that
    speaks still gets its voice; the voice is saved only when one was picked (the list shows the engine's
    default otherwise, and saving that would override the profile's voice)."""
    path = save_path(manager.settings.config)
    try:
        chosen = pick(profile, manager.profiles, "profile", "profile")
        values: dict[str, Any] = {
            "source_kind": mode.lower(),
            "profile": profile,
            "preset": preset,
            "mute": bool(mute),
            "live_sync": bool(sync),
            "watch": manager.rules(key).given(manager.settings, chosen),
        }
        if mode == "URL" and (url or "").strip():
            values["source"] = url
        if engine:
            auto = manager.settings.tts == "auto" and engine == manager.speech.default
            values["tts"] = "auto" if auto else engine
            values["tts_voice"] = manager.voice_prefs(key).voice
        stripped = write_defaults(path, values)
    except (OnlookerError, OSError) as exc:
        raise gr.Error(f"Could not save the defaults: {exc}", print_exception=False) from None
    note = (
        " The URL's user name and password were left out (they are never saved): type them again next time, "
        "or keep the whole URL in ONLOOKER_SOURCE or --source."
        if stripped
        else ""
    )
    gr.Info(f"Saved as defaults in {shown_path(path)}.{note}")


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
    gr.Info(f"Heard “{text}”. " + instruction_answer(manager, text))
    return "", None


def instruct(manager: SessionManager, key: str, text: str) -> str:
    """Send a live instruction; the box empties when it was taken, and keeps the text otherwise."""
    if not text.strip():
        return ""
    if not manager.instruct(key, text):
        gr.Warning("Start a source first; the instruction is kept in the box.")
        return text
    gr.Info(instruction_answer(manager, text.strip()))
    return ""


def instruction_answer(manager: SessionManager, text: str) -> str:
    """What the toast may honestly promise: a model reads the words; the offline narrator says what it understood."""
    understands = getattr(manager.choice.backend, "understands", None)
    if understands is None:
        return f"Sent to the model: “{text}”. The next comments take it into account."
    understood = understands(text)
    if understood:
        return f"The offline narrator will {understood}."
    return (
        f"The offline narrator cannot follow “{text}”: it understands only regions (left, right, top, bottom, "
        "centre), people or faces, motion, light and colour. A model follows any instruction."
    )
