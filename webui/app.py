"""The Blocks layout and its wiring; all logic lives in ``webui.handlers`` and ``webui.sessions``."""

from __future__ import annotations

import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline-safe: no telemetry calls home

import gradio as gr
from fastapi import HTTPException
from fastapi.responses import StreamingResponse

from pipeline.backends.base import Choice, create_backend
from pipeline.config import Settings
from pipeline.runconfig import load_run_config
from pipeline.sources.guard import is_loopback
from webui import handlers
from webui.live import BOUNDARY
from webui.sessions import MODES, SessionManager

log = logging.getLogger(__name__)

CSS = """
.live-view { width: 100%; border-radius: 8px; background: #111; }
.live-idle { height: 240px; display: flex; align-items: center; justify-content: center;
             border: 1px dashed #888; border-radius: 8px; color: #888; }
.status-strip { display: flex; flex-wrap: wrap; gap: 6px; font-size: 0.85em; }
.status-strip .pill { padding: 2px 8px; border-radius: 999px; background: rgba(127,127,127,0.15); }
.banner { border-left: 4px solid #e8a317; padding: 6px 12px; }
.small-note { font-size: 0.8em; opacity: 0.75; }
"""
# System fonts only: the default theme would fetch web fonts from a CDN, which breaks offline use.
THEME = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


# Browsers refuse to autoplay sound until the user has interacted with the page. Start is a click,
# which normally satisfies them; when a browser still refuses, say so and retry on the next click.
AUTOPLAY_NOTE = (
    '<div id="autoplay-note" class="banner" role="alert" style="display:none">'
    "Your browser blocked the spoken commentary from playing on its own. "
    "<b>Click anywhere on the page</b> (or press play on the audio player) to hear it.</div>"
)
AUTOPLAY_HEAD = """<script>
(() => {
  // Gradio's streaming player calls play() once the stream is ready; a browser that blocks it
  // rejects with NotAllowedError. Watch every media element that way (media events do not leave
  // shadow roots, so listeners go on the element itself).
  const blocked = new Set();
  const show = (on) => {
    const note = document.getElementById('autoplay-note');
    if (note) note.style.display = on ? 'block' : 'none';
  };
  const play = HTMLMediaElement.prototype.play;
  HTMLMediaElement.prototype.play = function (...args) {
    if (!this.onlookerWatched) {
      this.onlookerWatched = true;
      this.addEventListener('playing', () => {
        blocked.delete(this);
        if (!blocked.size) show(false);
      });
    }
    const result = play.apply(this, args);
    if (result && result.catch) {
      result.catch((err) => {
        if (err && err.name === 'NotAllowedError') { blocked.add(this); show(true); }
      });
    }
    return result;
  };
  document.addEventListener('pointerdown', () => {
    for (const media of blocked) play.call(media).catch(() => {});
  }, true);
})();
</script>"""
# Muting also silences what the player already holds (up to a chunk), not just what comes next.
MUTE_PLAYER_JS = """(muted) => {
  const walk = (root) => root.querySelectorAll('*').forEach((el) => {
    if (el instanceof HTMLMediaElement) el.muted = muted;
    if (el.shadowRoot) walk(el.shadowRoot);
  });
  const box = document.getElementById('speech');
  if (box) walk(box);
  return muted;
}"""


def speech_info(manager: SessionManager) -> str:
    """Under the engine dropdown: what runs, and why any engine is missing."""
    chosen = manager.speech
    voice_failed = bool(getattr(manager.choice.backend, "voice_error", ""))  # a model voice that could not start
    missing = "; ".join(f"{name}: {why}" for name, why in chosen.unavailable.items() if name != "model" or voice_failed)
    return f"{chosen.reason}." + (f" Not available: {missing}." if missing else "")


def fallback_banner(choice: Choice) -> str:
    if not choice.fallback:
        return ""
    return (
        f"**Offline narrator.** {choice.reason}. It describes motion, cuts, light, faces and people without a model. "
        "For real commentary start with `--model Qwen/Qwen2-VL-2B-Instruct` (any image-text-to-text model, on a GPU "
        "for speed); see the README."
    )


def build_demo(manager: SessionManager) -> gr.Blocks:
    """Every component and event; handlers get the tab's session hash as their key."""
    settings = manager.settings
    profiles = sorted(manager.profiles)
    presets = sorted(manager.presets.presets)

    def keyed(fn: Callable[..., Any]) -> Callable[..., Any]:
        """Adapter: Gradio calls (inputs..., request); handlers take (manager, tab key, inputs...).

        Gradio passes the request to a positional parameter whose type hint is ``gr.Request``, so
        the wrapper advertises the handler's inputs plus such a parameter (signature and hints).
        """
        inputs = list(inspect.signature(fn).parameters.values())[2:]
        if inspect.isgeneratorfunction(fn):

            def call(*args: Any) -> Any:
                yield from fn(manager, args[-1].session_hash, *args[:-1])
        else:

            def call(*args: Any) -> Any:
                return fn(manager, args[-1].session_hash, *args[:-1])

        request = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        call.__signature__ = inspect.Signature(
            [*(p.replace(annotation=inspect.Parameter.empty) for p in inputs), request]
        )  # type: ignore[attr-defined]
        call.__annotations__ = {"request": gr.Request}
        call.__name__ = fn.__name__
        return call

    with gr.Blocks(title="Onlooker") as demo:
        gr.Markdown("# Onlooker\nLive video in, live commentary out.")
        banner = fallback_banner(manager.choice)
        gr.Markdown(banner, visible=bool(banner), elem_classes=["banner"], elem_id="fallback-banner")
        with gr.Row():
            with gr.Column(scale=3):
                mode = gr.Radio(list(MODES), value="Upload", label="Source", elem_id="source-mode")
                webcam = gr.Image(
                    sources=["webcam"], streaming=True, type="numpy", label="Webcam", visible=False, elem_id="webcam"
                )
                upload = gr.File(label="Video file", file_types=["video"], type="filepath", elem_id="upload")
                url = gr.Textbox(
                    label="Stream URL",
                    placeholder="rtsp://user:pass@camera/stream · http://camera/video.mjpg · https://…/index.m3u8",
                    visible=False,
                    elem_id="url",
                )
                with gr.Row():
                    start = gr.Button("Start", variant="primary", elem_id="start")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                live = gr.HTML(handlers.IDLE_LIVE, elem_id="live")
                sync = gr.Checkbox(
                    value=settings.live_sync, label="Delay the picture to match the commentary", elem_id="sync"
                )
                status = gr.HTML(handlers.status_html(manager, ""), elem_id="status")
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="Commentary", height=420, elem_id="chat")
                audio = gr.Audio(
                    label="Spoken commentary", streaming=True, autoplay=True, interactive=False, elem_id="speech"
                )
                gr.HTML(AUTOPLAY_NOTE, elem_id="autoplay-note-box", padding=False)
                with gr.Row():
                    engines = handlers.engine_choices(manager)
                    speech_prefs = manager.voice_prefs("")
                    engine = gr.Dropdown(
                        engines,
                        value=speech_prefs.engine,
                        label="Speech engine",
                        interactive=bool(engines),
                        scale=2,
                        elem_id="speech-engine",
                    )
                    voice = gr.Dropdown(
                        label="Voice", allow_custom_value=True, elem_id="voice", **handlers.voice_settings(manager, "")
                    )
                    mute = gr.Checkbox(value=False, label="Mute speech", elem_id="mute")
                gr.Markdown(speech_info(manager), elem_id="speech-info", elem_classes=["small-note"])
                with gr.Row():
                    save = gr.Button("Save narration (WAV)", size="sm", elem_id="save-narration")
                    narration = gr.File(label="Narration", visible=False, elem_id="narration-file")
                instruction = gr.Textbox(
                    label="Tell the commentator", placeholder="focus on the goalkeeper", elem_id="instruction"
                )
                mic = gr.Audio(
                    sources=["microphone"],
                    type="numpy",
                    label="…or say it" + ("" if manager.transcriber else " (off)"),
                    interactive=manager.transcriber is not None,
                    elem_id="mic",
                )
                gr.Markdown(
                    manager.stt_reason, visible=bool(manager.stt_reason), elem_id="mic-off", elem_classes=["small-note"]
                )
                with gr.Row():
                    profile = gr.Dropdown(
                        profiles, value=settings.profile.strip().lower(), label="Profile", elem_id="profile"
                    )
                    preset = gr.Dropdown(
                        presets,
                        value=(settings.preset or manager.presets.default).lower(),
                        label="Preset",
                        elem_id="preset",
                    )
                gr.Markdown(f"Backend: **{manager.choice.backend.description}**", elem_id="backend")

        def show_inputs(choice: str) -> tuple[dict, dict, dict]:
            return (
                gr.update(visible=choice == "Webcam"),
                gr.update(visible=choice == "Upload"),
                gr.update(visible=choice == "URL"),
            )

        mode.change(show_inputs, mode, [webcam, upload, url], queue=False)
        started = start.click(
            keyed(handlers.start),
            [mode, upload, url, profile, preset],
            [live, status, chatbot],
            concurrency_limit=None,
        )
        chat_stream = started.success(keyed(handlers.commentary), None, chatbot, concurrency_limit=None)
        speech_stream = started.success(keyed(handlers.speech), None, audio, concurrency_limit=None)
        stop.click(keyed(handlers.stop), None, [live, status], cancels=[chat_stream, speech_stream])
        webcam.stream(
            keyed(handlers.webcam_frame), webcam, None, stream_every=0.1, concurrency_limit=None, time_limit=None
        )
        sync.change(keyed(handlers.set_sync), sync, None, queue=False)
        profile.change(keyed(handlers.change_profile), profile, None)
        preset.change(keyed(handlers.change_preset), preset, None)
        instruction.submit(keyed(handlers.instruct), instruction, instruction)
        mic.stop_recording(keyed(handlers.voice_instruction), mic, [instruction, mic])
        engine.change(keyed(handlers.change_engine), engine, voice, queue=False)
        voice.input(keyed(handlers.change_voice), [engine, voice], None, queue=False)
        save.click(keyed(handlers.save_narration), None, narration)
        mute.change(keyed(handlers.set_muted), mute, None, queue=False, js=MUTE_PLAYER_JS)
        gr.Timer(1.0).tick(keyed(lambda m, key: handlers.status_html(m, key)), None, status, concurrency_limit=None)

        demo.unload(keyed(handlers.close_tab))
    return demo


PIPELINE_THREAD_PREFIXES = ("commentator", "source-", "live-encoder", "viewer-monitor", "onlooker-")


def add_routes(demo: gr.Blocks, manager: SessionManager) -> None:
    """Each viewer's MJPEG live view (at an unguessable per-viewer URL) and a health summary."""

    def live(token: str) -> StreamingResponse:
        viewer = manager.by_token(token)
        if viewer is None:
            raise HTTPException(status_code=404, detail="no such live view (stopped, or the tab was closed)")
        return StreamingResponse(viewer.live.parts(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}")

    def health() -> dict[str, Any]:
        """Sessions and pipeline threads alive now: for monitoring, and for tests that check teardown."""
        threads = sorted(t.name for t in threading.enumerate() if t.name.startswith(PIPELINE_THREAD_PREFIXES))
        return {"sessions": manager.active_count(), "threads": threads, "backend": manager.choice.backend.description}

    demo.app.add_api_route("/onlooker/live/{token}.mjpg", live, methods=["GET"])
    demo.app.add_api_route("/onlooker/health", health, methods=["GET"])


def launch(settings: Settings) -> int:
    """Load presets, profiles and the backend, then serve the UI until Ctrl-C."""
    run = load_run_config(settings)
    choice = create_backend(settings)
    print(f"· backend: {choice.backend.description} ({choice.reason})", file=sys.stderr)
    exposed = settings.share or not is_loopback(settings.host)
    if exposed and not settings.auth:
        print(
            "· WARNING: the app is reachable by others (--share or a non-loopback --host) and has no login; "
            "anyone with the link can watch your camera and use your GPU. Add --auth user:password.",
            file=sys.stderr,
        )
    manager = SessionManager(settings, choice, run.presets, run.profiles)
    demo = build_demo(manager)
    auth = tuple(settings.auth.split(":", 1)) if settings.auth else None
    try:
        demo.queue(default_concurrency_limit=8).launch(
            server_name=settings.host,
            server_port=settings.port,
            share=settings.share,
            auth=auth,
            prevent_thread_lock=True,
            ssr_mode=False,
            theme=THEME,
            css=CSS,
            head=AUTOPLAY_HEAD,
            show_error=True,
            max_file_size=manager.limits.max_bytes,  # Gradio refuses bigger uploads before they fill the disk
        )
        add_routes(demo, manager)
        demo.block_thread()
    finally:
        manager.close_all()
        choice.backend.close()
    return 0
