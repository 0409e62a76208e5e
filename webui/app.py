"""The Blocks layout and its wiring; all logic lives in ``webui.handlers`` and ``webui.sessions``."""

from __future__ import annotations

import html
import inspect
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline-safe: no telemetry calls home

import gradio as gr
from fastapi import Request, WebSocket
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import StarletteDeprecationWarning
from starlette.middleware import Middleware

from pipeline.backends.base import Choice, create_backend
from pipeline.config import Settings, describe_validation_error
from pipeline.recording.folder import default_record_dir
from pipeline.recording.upkeep import tidy
from pipeline.runconfig import load_run_config
from pipeline.signals import on_stop
from pipeline.sources.guard_proxy import drop_no_proxy
from pipeline.space import detect_space, is_exposed, space_notes
from webui import handlers
from webui.channel import serve_tab
from webui.gate import LoginGate, login_of, login_required
from webui.history import HistoryAccess
from webui.history_tab import build_history_tab
from webui.memory import limit_malloc_arenas
from webui.sessions import SessionManager
from webui.sources import MODES
from webui.style import CSS, HEAD_CSS, THEME

log = logging.getLogger(__name__)

CLIENT_JS = (Path(__file__).with_name("client.js")).read_text(encoding="utf-8")

AUTOPLAY_NOTE = (
    '<div id="autoplay-note" class="banner" role="alert" style="display:none">'
    "Your browser blocked the spoken commentary from playing on its own. "
    "<b>Click anywhere on the page</b> to hear it.</div>"
)
LIVE_AREA = (
    '<div id="live-area" class="live-area" data-state="idle">'
    + AUTOPLAY_NOTE
    + '<img id="live-img" alt="live picture of the source" hidden>'
    '<video id="cam-preview" autoplay muted playsinline hidden></video>'
    '<div id="live-msg" class="live-msg">Pick a source and press <b>Start</b>.</div>'
    '<div id="live-caption" class="live-caption" aria-live="polite" hidden></div></div>'
)
HEAD = f"<script>{CLIENT_JS}</script>{HEAD_CSS}"
CHAT_PANE = '<div id="chat-pane" class="chat-pane" role="log" aria-live="polite"></div>'
NOTIFY = (
    '<label class="notify" title="A browser notification for each alert, also when this tab is in the background.">'
    '<input type="checkbox" id="notify-me"> Notify me</label>'
)
MODE_INFO = {
    "Upload": "A video file from this computer.",
    "URL": "An IP camera, RTSP/RTMP/HLS stream, MJPEG camera or a page such as YouTube.",
    "Webcam": "This browser's camera.",
}
STOP_NOW_JS = "() => { if (window.onlooker) window.onlooker.stopNow(); }"
MUTE_JS = "(muted) => (window.onlooker ? window.onlooker.mute(muted) : muted)"
# On load the page's player learns the source and mute it starts with (a saved default may differ from its own).
STARTING_JS = "(mode, muted) => { const o = window.onlooker; if (o) { o.pickMode(mode); o.mute(muted); } }"


def speech_info(manager: SessionManager) -> str:
    """Under the speech controls: what runs, and why any engine is missing."""
    chosen = manager.speech
    voice_failed = bool(getattr(manager.choice.backend, "voice_error", ""))  # a model voice that could not start
    missing = "; ".join(f"{name}: {why}" for name, why in chosen.unavailable.items() if name != "model" or voice_failed)
    return f"{chosen.reason}." + (f" Not available: {missing}." if missing else "")


def fallback_banner(choice: Choice) -> str:
    """Plain words for a first-time user with no model, one next step, and the reason on demand."""
    if not choice.fallback:
        return ""
    return (
        "<b>No AI model is loaded, so Onlooker uses its offline narrator.</b> "
        '<span class="banner-more">It describes motion, scene cuts, light, colour and people it can detect, '
        "without understanding what it sees. </span>"
        '<span class="banner-next"><b>Next step:</b> on a machine with a GPU, run '
        "<code>python app.py --model Qwen/Qwen2-VL-2B-Instruct</code>.</span>"
        f"<details><summary>Why, and other ways</summary>{html.escape(choice.reason)}. Or use an engine you already "
        "run (vLLM, SGLang, llama.cpp, Ollama): <code>python app.py --base-url http://host:8000/v1</code>. "
        "See the README.</details>"
    )


def space_banner(settings: Settings) -> str:
    """On a Hugging Face Space: what its owner must fix (no login, ZeroGPU), where every visitor sees it."""
    space = detect_space()
    fixes = space_notes(space, bool(settings.auth))[1:] if space else []
    return "".join(f"<p><b>This Space:</b> {html.escape(fix)}.</p>" for fix in fixes)


def picker(label: str, entries: dict[str, Any], key: str, info: str) -> gr.Dropdown:
    """A profile or preset dropdown: a readable name for each key (profiles have one; presets get
    theirs capitalised) and, under the label, one line on what the chosen one does."""
    choices = [(getattr(entry, "name", "") or name.capitalize(), name) for name, entry in sorted(entries.items())]
    return gr.Dropdown(choices, value=key, label=label, info=info, min_width=230, elem_id=label.lower())


def build_demo(manager: SessionManager) -> gr.Blocks:
    """Every component and event; handlers get the tab's session hash as their key."""
    settings = manager.settings
    profile_key = settings.profile.strip().lower()
    preset_key = (settings.preset or manager.presets.default).lower()
    kind = settings.source_kind or ("url" if settings.source else "upload")
    start_mode = next(m for m in MODES if m.lower() == kind)
    local = not manager.guard.exposed

    def keyed(fn: Callable[..., Any]) -> Callable[..., Any]:
        """Adapter: Gradio calls (inputs..., request); handlers take (manager, tab key, inputs...).

        Gradio passes the request to a positional parameter whose type hint is ``gr.Request``, so
        the wrapper advertises the handler's inputs plus such a parameter (signature and hints).
        """
        inputs = list(inspect.signature(fn).parameters.values())[2:]

        def call(*args: Any) -> Any:
            manager.note_login(args[-1].session_hash, getattr(args[-1], "username", None))
            try:
                return fn(manager, args[-1].session_hash, *args[:-1])
            except ValidationError as exc:  # never pydantic's raw report on the page: one plain line per problem
                lines = [line.split(": ", 1)[-1] for line in describe_validation_error(exc, "", BaseModel).splitlines()]
                raise gr.Error("That value was not accepted: " + "; ".join(lines), print_exception=False) from None

        request = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        call.__signature__ = inspect.Signature(
            [*(p.replace(annotation=inspect.Parameter.empty) for p in inputs), request]
        )  # type: ignore[attr-defined]
        call.__annotations__ = {"request": gr.Request}
        call.__name__ = fn.__name__
        return call

    quiet = {"show_progress": "hidden"}
    with gr.Blocks(title="Onlooker") as demo:
        gr.Markdown("# Onlooker\nWatches a video or camera and talks about it as it happens.", elem_id="header")
        banner = fallback_banner(manager.choice)
        gr.HTML(banner, visible=bool(banner), elem_classes=["banner"], elem_id="fallback-banner")
        warning = space_banner(manager.settings)
        gr.HTML(warning, visible=bool(warning), elem_classes=["banner"], elem_id="space-banner")
        tab = gr.HTML("", elem_id="onlooker-tab-box", elem_classes=["carrier"], padding=False)
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Watch", id="watch", elem_id="watch-tab"), gr.Row():
                with gr.Column(scale=3, elem_id="watch-column"):
                    with gr.Row(equal_height=True):
                        mode = gr.Radio(
                            list(MODES),
                            value=start_mode,
                            label="Source",
                            info=MODE_INFO[start_mode],
                            min_width=250,
                            elem_id="source-mode",
                        )
                        profile = picker(
                            "Profile", manager.profiles, profile_key, handlers.profile_info(manager, profile_key)
                        )
                        preset = picker(
                            "Preset", manager.presets.presets, preset_key, handlers.preset_info(manager, preset_key)
                        )
                    upload = gr.File(
                        label="Video file",
                        file_types=["video"],
                        type="filepath",
                        height=120,
                        visible=start_mode == "Upload",
                        elem_id="upload",
                    )
                    url = gr.Textbox(
                        value=settings.source if local else None,  # the owner's camera, never shown to visitors
                        label="Stream URL",
                        placeholder="rtsp://user:pass@camera/stream · http://camera/video.mjpg · https://…/index.m3u8",
                        visible=start_mode == "URL",
                        elem_id="url",
                    )
                    with gr.Row():
                        start = gr.Button("Start", variant="primary", min_width=100, elem_id="start")
                        stop = gr.Button("Stop", variant="secondary", min_width=100, elem_id="stop")
                        # Only on the owner's own machine: a visitor of a shared app must not rewrite its defaults
                        # (not even through the API, so there is no button and no event at all).
                        save_default = (
                            gr.Button("Save as default", scale=0, min_width=160, elem_id="save-default")
                            if local
                            else None
                        )
                    gr.HTML(LIVE_AREA, elem_id="live", padding=False)
                    gr.HTML(
                        f'<div id="status-box">{handlers.status_html(manager, "")}</div>',
                        elem_id="status",
                        padding=False,
                    )
                    sync = gr.Checkbox(
                        value=settings.live_sync,
                        label="Delay the picture to match the commentary",
                        info="Holds the picture back by the time the words take, so both line up.",
                        elem_id="sync",
                    )
                with gr.Column(scale=2, elem_id="talk-column"):
                    gr.HTML(CHAT_PANE, elem_id="chat", padding=False)
                    instruction = gr.Textbox(
                        label="Tell the commentator",
                        placeholder="focus on the goalkeeper · watch the door",
                        info=handlers.instruction_info(manager),
                        elem_id="instruction",
                    )
                    with gr.Accordion("Alerts", open=True, elem_id="alerts"):
                        with gr.Row(equal_height=True, elem_id="rule-row"):
                            rule = gr.Textbox(
                                label="Watch for",
                                show_label=False,
                                container=False,
                                max_lines=1,
                                placeholder="Watch for… a person at the door",
                                scale=4,
                                elem_id="rule-input",
                            )
                            add_rule = gr.Button("Add", scale=1, min_width=70, elem_id="rule-add")
                        gr.HTML(
                            f'<div id="rules-box">{handlers.first_rules_html(manager)}</div>{NOTIFY}',
                            elem_id="rules",
                            padding=False,
                        )
                    with gr.Accordion("Speech", open=True, elem_id="speech"):
                        with gr.Row(equal_height=True):
                            engines = handlers.engine_choices(manager)
                            speech_prefs = manager.voice_prefs("")
                            engine = gr.Dropdown(
                                engines,
                                value=speech_prefs.engine,
                                label="Speech engine",
                                interactive=bool(engines),
                                min_width=220,
                                elem_id="speech-engine",
                            )
                            voice = gr.Dropdown(
                                label="Voice",
                                allow_custom_value=True,
                                min_width=140,
                                elem_id="voice",
                                **handlers.voice_settings(manager, ""),
                            )
                            mute = gr.Checkbox(value=speech_prefs.muted, label="Mute", min_width=90, elem_id="mute")
                        with gr.Row():
                            save = gr.Button("Save narration (WAV)", size="sm", elem_id="save-narration")
                            narration = gr.File(label="Narration", visible=False, elem_id="narration-file")
                        gr.Markdown(speech_info(manager), elem_id="speech-info", elem_classes=["small-note"])
                    mic_on = manager.transcriber is not None
                    with gr.Accordion(
                        "Say an instruction" + ("" if mic_on else " (off)"), open=False, elem_id="mic-box"
                    ):
                        mic = gr.Audio(
                            sources=["microphone"],
                            type="numpy",
                            label="Microphone",
                            interactive=mic_on,
                            visible=mic_on,
                            elem_id="mic",
                        )
                        gr.Markdown(
                            manager.stt_reason,
                            visible=bool(manager.stt_reason),
                            elem_id="mic-off",
                            elem_classes=["small-note"],
                        )
                    gr.Markdown(
                        f"Model: **{manager.choice.backend.description}**",
                        elem_id="backend",
                        elem_classes=["small-note"],
                    )
            build_history_tab(HistoryAccess.from_settings(settings))

        def show_inputs(choice: str) -> tuple[dict, dict, dict]:
            return (
                gr.update(info=MODE_INFO.get(choice, "")),
                gr.update(visible=choice == "Upload"),
                gr.update(visible=choice == "URL"),
            )

        demo.load(keyed(handlers.open_tab), None, tab, queue=False)
        demo.load(None, [mode, mute], None, js=STARTING_JS, queue=False)
        mode.change(show_inputs, mode, [mode, upload, url], queue=False, **quiet)
        start.click(keyed(handlers.start), [mode, upload, url, profile, preset], None, concurrency_limit=None, **quiet)
        stop.click(keyed(handlers.stop), None, None, js=STOP_NOW_JS, **quiet)
        sync.change(keyed(handlers.set_sync), sync, None, queue=False, **quiet)
        profile.change(keyed(handlers.change_profile), profile, profile, **quiet)
        preset.change(keyed(handlers.change_preset), preset, preset, **quiet)
        instruction.submit(keyed(handlers.instruct), instruction, instruction, **quiet)
        rule.submit(keyed(handlers.add_rule), rule, rule, **quiet)
        add_rule.click(keyed(handlers.add_rule), rule, rule, **quiet)
        mic.stop_recording(keyed(handlers.voice_instruction), mic, [instruction, mic], **quiet)
        engine.change(keyed(handlers.change_engine), engine, voice, queue=False, **quiet)
        voice.input(keyed(handlers.change_voice), [engine, voice], None, queue=False, **quiet)
        save.click(keyed(handlers.save_narration), None, narration, **quiet)
        mute.change(keyed(handlers.set_muted), mute, None, queue=False, js=MUTE_JS, **quiet)
        if save_default is not None:
            save_default.click(
                keyed(handlers.save_defaults), [mode, url, profile, preset, engine, mute, sync], None, **quiet
            )
    return demo


PIPELINE_THREAD_PREFIXES = ("commentator", "source-", "live-", "viewer-", "speaker", "onlooker-", "consumer-")


def add_routes(demo: gr.Blocks, manager: SessionManager) -> None:
    """Each tab's channel (a WebSocket at an unguessable per-tab URL) and a health summary; with ``--auth``
    both are behind the login (``webui.gate``)."""
    app = demo.app

    async def tab_socket(websocket: WebSocket, token: str) -> None:
        channel = manager.tab_by_token(token)
        if channel is None:
            await websocket.close(code=4404)
            return
        await websocket.accept()
        await serve_tab(
            websocket,
            channel,
            lambda: handlers.status_html(manager, channel.key),
            lambda run, jpeg: manager.webcam_frame(channel.key, run, jpeg),
            lambda gone: manager.forget(gone.key),
            lambda asked: handlers.rule_button(manager, channel.key, asked),
            manager.leaving,
        )

    def health(request: Request) -> Any:
        """Sessions and pipeline threads alive now: for monitoring, and for tests that check teardown. Behind a
        login, a visitor who has not logged in gets a bare "ok": the app is up, and nothing about who uses it."""
        if login_required(app) and login_of(app, request) is None:
            return PlainTextResponse("ok")
        threads = sorted(t.name for t in threading.enumerate() if t.name.startswith(PIPELINE_THREAD_PREFIXES))
        return {
            "sessions": manager.active_count(),
            "tabs": manager.tab_count(),
            "threads": threads,
            "backend": manager.choice.backend.description,
        }

    app.add_api_websocket_route("/onlooker/tab/{token}", tab_socket)
    app.add_api_route("/onlooker/health", health, methods=["GET"])


def launch(settings: Settings) -> int:
    """Load presets, profiles and the backend, then serve the UI until Ctrl-C or SIGTERM."""
    print("· Onlooker is starting: loading the presets, profiles and the model…", file=sys.stderr, flush=True)
    # Gradio's queue calls a Starlette helper that warns on every streamed response; not ours to fix, not news.
    warnings.filterwarnings("ignore", category=StarletteDeprecationWarning)
    limit_malloc_arenas()
    run = load_run_config(settings)
    choice = create_backend(settings)
    print(f"· backend: {choice.backend.description} ({choice.reason})", file=sys.stderr, flush=True)
    space = detect_space()
    for note in space_notes(space, bool(settings.auth)) if space else []:
        print(f"· {note}", file=sys.stderr, flush=True)
    exposed = is_exposed(settings)
    if exposed and (note := drop_no_proxy()):
        print(f"· {note}", file=sys.stderr, flush=True)
    if exposed and not settings.auth and space is None:
        print(
            "· WARNING: the app is reachable by others (--share or a non-loopback --host) and has no login; "
            "anyone with the link can watch your camera and use your GPU. Add --auth user:password.",
            file=sys.stderr,
        )
    if settings.record:
        for line in tidy(settings.record_dir or default_record_dir(), settings.keep_days, settings.max_record_gb):
            print(f"· retention: {line}", file=sys.stderr, flush=True)
    manager = SessionManager(settings, choice, run.presets, run.profiles)
    demo = build_demo(manager)
    auth = settings.logins() or None
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
            head=HEAD,
            show_error=True,
            quiet=True,  # its own hints name launch() arguments; ours name the flags
            max_file_size=manager.limits.max_bytes,  # Gradio refuses bigger uploads before they fill the disk
            enable_monitoring=False,  # its dashboard prints a key to the terminal for anyone logged in; not needed
            # FastAPI's schema lists every route to anyone; Gradio's own (/gradio_api/openapi.json) is behind the login
            app_kwargs={"openapi_url": None, "middleware": [Middleware(LoginGate)]},
        )
        add_routes(demo, manager)
        threading.Thread(target=manager.reap_forever, name="tab-reaper", daemon=True).start()
        print(f"· ready: {demo.local_url}", file=sys.stderr, flush=True)
        if demo.share_url:
            print(f"· shared at {demo.share_url} (for 72 hours)", file=sys.stderr, flush=True)
        elif not settings.share:
            print(
                "· to open it from another device, add --share (a temporary public link) and --auth user:pass",
                file=sys.stderr,
                flush=True,
            )

        def shut_down() -> None:
            """SIGTERM or Ctrl-C (``pipeline.signals``): every session stopped while the server still runs, then
            the server; ``block_thread`` returns once it is closed."""
            manager.stop_all()
            demo.close(verbose=False)

        with on_stop(shut_down):
            demo.block_thread()
    finally:
        manager.close_all()
        choice.backend.close()
    return 0
