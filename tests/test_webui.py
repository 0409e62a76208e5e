"""The web UI's logic without a browser: chat log, status strip, live view, per-tab sessions, handlers."""

from __future__ import annotations

import threading

import gradio as gr
import numpy as np
import pytest
from scripted_backend import ScriptedBackend

from pipeline.backends.base import Choice
from pipeline.config import Tuning, load_presets, load_settings
from pipeline.events import (
    CommentaryDelta,
    CommentaryFinished,
    CommentaryStarted,
    EventBus,
    ModeChanged,
    SceneCut,
    SourceStatus,
)
from pipeline.frames import Frame
from pipeline.hub import FrameHub
from pipeline.prompts import load_profiles
from webui import handlers
from webui.app import PIPELINE_THREAD_PREFIXES
from webui.chat import MAX_MESSAGES, ChatLog
from webui.live import BOUNDARY, LiveView
from webui.sessions import SessionManager, SourceRequest
from webui.status import StatusSnapshot, render_status


def pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(PIPELINE_THREAD_PREFIXES)]


# --- chat log --------------------------------------------------------------------------------------


def test_chat_streams_a_comment_into_one_message_with_its_timestamp():
    chat = ChatLog()
    chat.apply(CommentaryStarted(t=12.3, comment_id=1, trigger="active", frames=2))
    chat.apply(CommentaryDelta(t=12.3, comment_id=1, text="A dog "))
    chat.apply(CommentaryDelta(t=12.3, comment_id=1, text="runs."))
    assert chat.messages == [{"role": "assistant", "content": "`00:12.3` A dog runs."}]
    chat.apply(CommentaryFinished(t=12.3, comment_id=1, text="A dog runs."))
    assert chat.messages[-1]["content"] == "`00:12.3` A dog runs."


def test_chat_drops_suppressed_comments_and_coalesces_notes():
    chat = ChatLog()
    chat.apply(CommentaryStarted(t=1, comment_id=1, trigger="active", frames=1))
    chat.apply(CommentaryDelta(t=1, comment_id=1, text="Same as before"))
    chat.apply(CommentaryFinished(t=1, comment_id=1, text="Same as before", suppressed="duplicate"))
    assert chat.messages == []
    for i in range(6):
        chat.apply(SceneCut(t=i, score=1.0))
    chat.apply(ModeChanged(t=7, mode="active"))
    assert len(chat.messages) == 1 and chat.messages[0]["role"] == "user"
    assert "active" in chat.messages[0]["content"] and chat.messages[0]["content"].count("·") == 3
    assert not chat.apply(SourceStatus(t=0, state="connecting"))


def test_chat_keeps_a_bounded_history():
    chat = ChatLog()
    for i in range(MAX_MESSAGES + 50):
        chat.apply(CommentaryStarted(t=i, comment_id=i, trigger="active", frames=1))
        chat.apply(CommentaryFinished(t=i, comment_id=i, text=f"comment {i}"))
    assert len(chat.messages) == MAX_MESSAGES
    assert chat.messages[-1]["content"].endswith(f"comment {MAX_MESSAGES + 49}")


def test_status_strip_shows_values_and_escapes_them():
    snap = StatusSnapshot(
        source="live", mode="active", capture_fps=1.0, display_fps=29.6, latency_ms=420, source_lag_ms=41.6
    )
    out = render_status(snap, "<b>model</b>", "CPU")
    assert 'data-source="live"' in out and "ACTIVE" in out and "30 fps" in out and "0.42 s" in out
    assert "<b>source lag</b> 42 ms" in out
    assert "<b>model</b>" not in out and "&lt;b&gt;model&lt;/b&gt;" in out
    assert "<b>source lag</b> –" in render_status(StatusSnapshot(), "m", "CPU")  # the stream does not say


def test_outage_notes_say_why_and_how_long() -> None:
    chat = ChatLog()
    chat.apply(SourceStatus(t=3, state="live", detail="320x180"))
    chat.apply(SourceStatus(t=4, state="reconnecting", detail="the stream ended; retry 1 in 0.7 s"))
    chat.apply(SourceStatus(t=9, state="live", detail="back after 5 s, 320x180"))
    assert chat.messages[-1]["content"] == (
        "<small>source live · source reconnecting: the stream ended; retry 1 in 0.7 s · "
        "source live: back after 5 s, 320x180</small>"
    )


# --- live view -------------------------------------------------------------------------------------


def _frame(i: int, wall: float) -> Frame:
    image = np.zeros((90, 160, 3), np.uint8)
    image[:, : (i * 7) % 160] = 200
    return Frame(image, i / 30, wall, i, "t")


def test_live_view_serves_jpeg_parts_of_new_frames():
    import time

    hub = FrameHub(EventBus(), Tuning())
    view = LiveView(hub, sync=False)
    parts = view.parts()
    try:
        hub.push(_frame(0, time.time()))
        first = next(parts)
        assert first.startswith(f"--{BOUNDARY}\r\nContent-Type: image/jpeg".encode())
        body = first.split(b"\r\n\r\n", 1)[1]
        assert body[:2] == b"\xff\xd8" and body.rstrip(b"\r\n")[-2:] == b"\xff\xd9"
        hub.push(_frame(1, time.time()))
        assert next(parts) != first
    finally:
        view.close()
        parts.close()
    assert not [t for t in threading.enumerate() if t.name == "live-encoder"]


def test_live_view_with_sync_holds_frames_back_by_the_measured_latency():
    import time

    hub = FrameHub(EventBus(), Tuning())
    view = LiveView(hub, sync=True)
    view.observe_latency(0.3)
    assert view.delay == pytest.approx(0.3)
    parts = view.parts()
    try:
        pushed = time.time()
        hub.push(_frame(0, pushed))
        next(parts)
        assert time.time() - pushed >= 0.3 - 0.01
    finally:
        view.close()
        parts.close()
    view.observe_latency(0.6)
    assert 0.3 < view.latency < 0.6  # a moving average, not the last sample


# --- sessions and handlers -------------------------------------------------------------------------


@pytest.fixture
def manager(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(tts="none")
    backend = ScriptedBackend()
    mgr = SessionManager(settings, Choice(backend, "test"), load_presets(), load_profiles())
    yield mgr
    mgr.close_all()
    assert not pipeline_threads()


def test_upload_session_streams_commentary_to_the_chat_and_ends(manager, short_video):
    live, _status, chat = handlers.start(manager, "tab1", "Upload", str(short_video), None, "sports", "sniper")
    assert 'src="onlooker/live/' in live and chat == []
    updates = list(handlers.commentary(manager, "tab1"))
    assert updates, "the chat never updated"
    final = updates[-1]
    assert any(m["role"] == "assistant" and "Comment number 1" in m["content"] for m in final)
    assert "source ended" in final[-1]["content"]


def test_starting_again_replaces_the_running_session(manager, story_video, short_video):
    first = manager.start("tab", SourceRequest("Upload", str(story_video)), "narrator", "balanced")
    second = manager.start("tab", SourceRequest("Upload", str(short_video)), "narrator", "balanced")
    assert manager.get("tab") is second and manager.active_count() == 1
    assert not first.session.commentator.running and not first.source.running
    assert manager.by_token(first.token) is None and manager.by_token(second.token) is second


def test_tabs_are_isolated_and_closing_one_leaves_the_other(manager, story_video):
    a = manager.start("a", SourceRequest("Upload", str(story_video)), "narrator", "balanced")
    b = manager.start("b", SourceRequest("Upload", str(story_video)), "narrator", "balanced")
    assert a.session.bus is not b.session.bus
    handlers.close_tab(manager, "a")
    assert manager.get("a") is None and b.session.commentator.running


@pytest.mark.parametrize(
    ("mode", "upload", "url", "message"),
    [
        ("Upload", None, None, "choose a video file"),
        ("URL", None, "  ", "type a stream or camera URL"),
        ("URL", None, "gopher://x/y", "unsupported scheme"),
        ("Upload", "/no/such/file.mp4", None, "file not found"),
    ],
)
def test_bad_source_input_is_a_clear_error_and_starts_nothing(manager, mode, upload, url, message):
    with pytest.raises(gr.Error, match=message):
        handlers.start(manager, "tab", mode, upload, url, "narrator", "balanced")
    assert manager.get("tab") is None and not pipeline_threads()


def test_webcam_frames_feed_the_pipeline(manager):
    viewer = manager.start("cam", SourceRequest("Webcam"), "narrator", "balanced")
    got = threading.Event()
    sub = viewer.session.bus.subscribe("t")
    handlers.webcam_frame(manager, "cam", np.full((48, 64, 4), 90, np.uint8))  # RGBA from the browser
    for event in sub:
        if isinstance(event, CommentaryFinished):
            got.set()
            break
    assert got.is_set()
    assert viewer.session.hub.latest.image.shape == (48, 64, 3)
    handlers.webcam_frame(manager, "nobody", np.zeros((4, 4, 3), np.uint8))  # no session: ignored


def test_live_changes_reach_the_running_session(manager, story_video):
    viewer = manager.start("tab", SourceRequest("Upload", str(story_video)), "narrator", "balanced")
    handlers.change_profile(manager, "tab", "sports")
    handlers.change_preset(manager, "tab", "sentry")
    assert viewer.session.commentator.profile.name == "Sports commentator"
    assert viewer.session.commentator.tuning.heartbeat == 0
    assert handlers.instruct(manager, "tab", "focus on the goalkeeper") == ""
    assert "focus on the goalkeeper" in viewer.session.commentator.instructions
    with pytest.raises(gr.Error, match="unknown profile"):
        handlers.change_profile(manager, "tab", "pirate")


def test_sync_toggle_applies_now_and_to_the_next_start(manager, story_video):
    viewer = manager.start("tab", SourceRequest("Upload", str(story_video)), "narrator", "balanced")
    assert viewer.live.sync is True
    handlers.set_sync(manager, "tab", False)
    assert viewer.live.sync is False and viewer.live.delay == 0.0
    again = manager.start("tab", SourceRequest("Upload", str(story_video)), "narrator", "balanced")
    assert again.live.sync is False


def test_instruction_without_a_session_is_kept_in_the_box(manager):
    assert handlers.instruct(manager, "nobody", "look left") == "look left"


def test_speech_speaks_kept_comments_and_the_tab_can_save_them(tmp_path, monkeypatch, short_video):
    import wave

    monkeypatch.chdir(tmp_path)
    mgr = SessionManager(load_settings(tts="espeak"), Choice(ScriptedBackend(), "t"), load_presets(), load_profiles())
    try:
        with pytest.raises(gr.Error, match="Nothing has been spoken yet"):
            handlers.save_narration(mgr, "tab")
        mgr.start("tab", SourceRequest("Upload", str(short_video)), "narrator", "balanced")
        chunks = list(handlers.speech(mgr, "tab"))
        saved = handlers.save_narration(mgr, "tab")
    finally:
        mgr.close_all()
    assert chunks
    rate, samples = chunks[0]
    assert rate == 24000 and samples.dtype == np.int16 and len(samples) > rate * 0.3
    assert np.abs(samples.astype(np.int32)).max() > 1000  # real speech, not silence
    with wave.open(saved["value"]) as wav:
        assert wav.getframerate() == 24000 and wav.getnframes() >= sum(len(c[1]) for c in chunks)
        track = np.frombuffer(wav.readframes(wav.getnframes()), np.int16)
    assert np.abs(track.astype(np.int32)).max() > 1000 and saved["visible"] is True


@pytest.fixture
def spoken_instruction() -> tuple[int, np.ndarray]:
    """A real recording of a spoken instruction (espeak-ng), as Gradio's microphone hands it over."""
    from pipeline.prompts import Voice
    from pipeline.speech.espeak import EspeakEngine

    speech = EspeakEngine().synthesize("focus on the goalkeeper", Voice())
    return speech.sample_rate, speech.samples


def test_a_spoken_instruction_joins_the_live_instructions(
    tmp_path, monkeypatch, story_video, tiny_whisper, spoken_instruction
):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(tts="none", stt_model=str(tiny_whisper))
    mgr = SessionManager(settings, Choice(ScriptedBackend(), "t"), load_presets(), load_profiles())
    assert mgr.transcriber is not None and mgr.stt_reason == ""
    try:
        box, recorder = handlers.voice_instruction(mgr, "tab", spoken_instruction)
        assert box.strip() and recorder is None  # no session yet: the words wait in the box
        viewer = mgr.start("tab", SourceRequest("Upload", str(story_video)), "narrator", "balanced")
        assert handlers.voice_instruction(mgr, "tab", spoken_instruction) == ("", None)
        assert len(viewer.session.commentator.instructions) == 1  # random tiny model: words, not wording
        with pytest.raises(gr.Error, match=r"shorter than 0\.3 s"):
            handlers.voice_instruction(mgr, "tab", (16000, np.zeros(1000, np.int16)))
    finally:
        mgr.close_all()


def test_without_a_speech_recogniser_the_microphone_says_why(manager, spoken_instruction):
    assert manager.transcriber is None
    assert "--stt-model" in manager.stt_reason
    with pytest.raises(gr.Error, match="Speech input is off"):
        handlers.voice_instruction(manager, "tab", spoken_instruction)


def test_a_shared_app_refuses_internal_urls_and_starts_nothing(tmp_path, monkeypatch):
    from pipeline.errors import OnlookerError

    monkeypatch.chdir(tmp_path)
    settings = load_settings(tts="none", host="0.0.0.0", allow_hosts="127.0.0.2")
    mgr = SessionManager(settings, Choice(ScriptedBackend(), "t"), load_presets(), load_profiles())
    try:
        for url, words in [
            ("http://169.254.169.254/latest/meta-data/", "private, loopback or link-local"),
            ("/etc/passwd", "local files and paths cannot be opened on a shared app"),
        ]:
            with pytest.raises(OnlookerError, match=words):
                mgr.start("tab", SourceRequest("URL", url=url), "narrator", "balanced")
        assert mgr.active_count() == 0 and not pipeline_threads()
        assert mgr.guard.allow and mgr.guard.exposed
    finally:
        mgr.close_all()


def test_url_sources_get_the_checked_address_and_the_rtsp_transport() -> None:
    from pipeline.sources.guard import UrlGuard
    from pipeline.sources.stream import StreamSource
    from webui.sessions import make_source

    request = SourceRequest("URL", url="rtsp://cam.example.com:8554/live")
    local = make_source(request, UrlGuard.build(False), "udp")
    assert isinstance(local, StreamSource) and local.rtsp_transport == "udp" and local.uri == request.url
    shared = make_source(request, UrlGuard(True, resolve=lambda host: ["93.184.216.34"]))
    assert shared.uri == "rtsp://93.184.216.34:8554/live"
