"""The web UI's logic without a browser: chat log, status strip, live view, per-tab sessions, handlers."""

from __future__ import annotations

import queue
import threading

import gradio as gr
import numpy as np
import pytest

from pipeline.backends.base import Choice
from pipeline.config import Tuning, load_presets, load_settings
from pipeline.events import (
    CommentaryDelta,
    CommentaryFinished,
    CommentaryStarted,
    ErrorEvent,
    EventBus,
    ModeChanged,
    SceneCut,
    SourceStatus,
)
from pipeline.frames import Frame
from pipeline.hub import FrameHub
from pipeline.prompts import load_profiles
from tests.helpers.scripted_backend import ScriptedBackend
from tests.helpers.tab_page import TabPage as Page
from tests.helpers.tab_page import is_type
from webui import handlers
from webui.app import PIPELINE_THREAD_PREFIXES
from webui.channel import parse_audio
from webui.chat import chat_op
from webui.live import LiveView
from webui.sessions import SessionManager
from webui.sources import SourceRequest
from webui.status import StatusSnapshot, render_status


def pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(PIPELINE_THREAD_PREFIXES)]


# --- chat operations -------------------------------------------------------------------------------


def test_a_comment_streams_in_place_and_ends_with_its_final_text():
    assert chat_op(CommentaryStarted(t=12.3, comment_id=1, trigger="active", frames=2)) == {
        "type": "comment",
        "id": 1,
        "clock": "00:12.3",
    }
    assert chat_op(CommentaryDelta(t=12.3, comment_id=1, text="A dog ")) == {"type": "delta", "id": 1, "text": "A dog "}
    final = chat_op(CommentaryFinished(t=12.3, comment_id=1, text="A dog runs."))
    assert final == {"type": "final", "id": 1, "clock": "00:12.3", "text": "A dog runs."}
    assert chat_op(CommentaryFinished(t=1, comment_id=2, text="x", suppressed="duplicate")) == {"type": "drop", "id": 2}


def test_notes_are_short_and_failures_go_to_the_live_area_once():
    assert chat_op(SceneCut(t=4, score=1.0)) == {"type": "note", "text": "00:04.0 · scene cut"}
    assert "commenting more often" in chat_op(ModeChanged(t=7, mode="active"))["text"]
    assert chat_op(SourceStatus(t=0, state="connecting")) is None
    assert chat_op(SourceStatus(t=0, state="live", detail="320x180")) is None
    # A failed source publishes a status and a fatal error with the same words: only the error is shown.
    assert chat_op(SourceStatus(t=1, state="failed", detail="HTTP 404")) is None
    assert chat_op(ErrorEvent(t=1, message="HTTP 404", fatal=True)) == {"type": "problem", "text": "HTTP 404"}
    assert chat_op(ErrorEvent(t=1, message="speech failed: x"))["type"] == "note"


def test_status_strip_shows_values_and_escapes_them():
    snap = StatusSnapshot(
        source="live", mode="active", capture_fps=1.0, display_fps=29.6, latency_ms=420, source_lag_ms=41.6
    )
    out = render_status(snap, "<i>tiny</i>", "CPU")
    assert 'data-source="live"' in out and "<b>scene</b> busy" in out and "30 fps" in out and "0.4 s" in out
    assert "<b>camera lag</b> 42 ms" in out
    assert "<i>tiny</i>" not in out and "&lt;i&gt;tiny&lt;/i&gt;" in out
    assert "<b>camera lag</b> –" in render_status(StatusSnapshot(), "m", "CPU")  # the stream does not say
    assert out.count('title="') == 9  # every pill explains itself on hover


def test_outage_notes_say_why_and_how_long() -> None:
    assert chat_op(SourceStatus(t=4, state="reconnecting", detail="the stream ended; retry 1 in 0.7 s")) == {
        "type": "note",
        "text": "00:04.0 · source reconnecting: the stream ended; retry 1 in 0.7 s",
    }
    back = chat_op(SourceStatus(t=9, state="live", detail="back after 5 s, 320x180"))
    assert back == {"type": "note", "text": "00:09.0 · source live again (back after 5 s, 320x180)"}


# --- live view -------------------------------------------------------------------------------------


def _frame(i: int, wall: float) -> Frame:
    image = np.zeros((90, 160, 3), np.uint8)
    image[:, : (i * 7) % 160] = 200
    return Frame(image, i / 30, wall, i, "t")


class Pictures:
    """A LiveView sink that hands each JPEG to the test, in order."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[float, bytes]] = queue.Queue()

    def __call__(self, wall_time: float, jpeg: bytes) -> None:
        self.queue.put((wall_time, jpeg))

    def next(self) -> tuple[float, bytes]:
        return self.queue.get(timeout=10)


def test_live_view_hands_jpegs_of_new_frames_to_the_channel():
    import time

    hub = FrameHub(EventBus(), Tuning())
    pictures = Pictures()
    view = LiveView(hub, pictures, sync=False)
    try:
        pushed = time.time()
        hub.push(_frame(0, pushed))
        wall, first = pictures.next()
        assert wall == pushed and first[:2] == b"\xff\xd8" and first[-2:] == b"\xff\xd9"
        hub.push(_frame(1, time.time()))
        assert pictures.next()[1] != first
    finally:
        view.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("live-")]


def test_live_view_with_sync_holds_frames_back_by_the_measured_latency():
    import time

    hub = FrameHub(EventBus(), Tuning())
    pictures = Pictures()
    view = LiveView(hub, pictures, sync=True)
    view.observe_latency(0.3)
    assert view.delay == pytest.approx(0.3)
    try:
        pushed = time.time()
        hub.push(_frame(0, pushed))
        pictures.next()
        assert time.time() - pushed >= 0.3 - 0.01
    finally:
        view.close()
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


def test_upload_session_streams_picture_and_commentary_to_the_page_and_ends(manager, short_video):
    page = Page(manager, "tab1")
    handlers.start(manager, "tab1", "Upload", str(short_video), None, "sports", "sniper")
    page.until(is_type("ended"))
    run = page.of_type("run")[0]
    assert run["run"] == 1 and run["mode"] == "Upload" and run["label"] == short_video.name
    finals = page.of_type("final")
    assert any("Comment number 1" in m["text"] for m in finals) and all(m["run"] == 1 for m in finals)
    assert any(isinstance(m, bytes) and m[0] == 1 and b"\xff\xd8" in m[:40] for m in page.messages)  # pictures
    assert page.of_type("ended")[0]["error"] == ""
    assert "source ended" in page.of_type("note")[-1]["text"]


def test_starting_again_is_a_new_run_and_the_old_one_is_gone(manager, story_video, short_video):
    page = Page(manager, "tab")
    first = manager.start("tab", SourceRequest("Upload", str(story_video)), "narrator", "balanced")
    second = manager.start("tab", SourceRequest("Upload", str(short_video)), "narrator", "balanced")
    assert manager.get("tab") is second and manager.active_count() == 1
    assert not first.session.commentator.running and not first.source.running
    assert (first.run, second.run) == (1, 2)
    page.until(lambda m: isinstance(m, dict) and m["type"] == "final" and m["run"] == 2)
    kinds = [(m["type"], m["run"]) for m in page.messages if isinstance(m, dict)]
    assert kinds.index(("stopped", 1)) < kinds.index(("run", 2))
    after = kinds[kinds.index(("run", 2)) :]
    assert all(run == 2 for _, run in after)  # nothing of the old run after the new one began


def test_tabs_are_isolated_and_closing_one_leaves_the_other(manager, story_video):
    a = manager.start("a", SourceRequest("Upload", str(story_video)), "narrator", "balanced")
    b = manager.start("b", SourceRequest("Upload", str(story_video)), "narrator", "balanced")
    assert a.session.bus is not b.session.bus and a.channel is not b.channel
    manager.forget("a")
    assert manager.get("a") is None and b.session.commentator.running and manager.tab_count() == 1


@pytest.mark.parametrize(
    ("mode", "upload", "url", "message"),
    [
        ("Upload", None, None, "choose a video file"),
        ("URL", None, "  ", "type a stream or camera URL"),
        ("URL", None, "gopher://x/y", "unsupported scheme"),
        ("Upload", "/no/such/file.mp4", None, "file not found"),
    ],
)
def test_bad_source_input_is_said_once_in_the_live_area_and_starts_nothing(manager, mode, upload, url, message):
    page = Page(manager, "tab")
    handlers.start(manager, "tab", mode, upload, url, "narrator", "balanced")
    page.until(is_type("failed"))
    failed = page.of_type("failed")
    assert len(failed) == 1 and message in failed[0]["text"] and failed[0]["run"] == 1
    assert manager.get("tab") is None and not pipeline_threads()


def test_webcam_frames_from_the_page_feed_the_pipeline(manager):
    import cv2

    viewer = manager.start("cam", SourceRequest("Webcam"), "narrator", "balanced")
    assert viewer.live is None  # the page shows its own camera preview
    sub = viewer.session.bus.subscribe("t")
    _, jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))
    manager.webcam_frame("cam", viewer.run + 1, jpeg.tobytes())  # another run's frame: ignored
    manager.webcam_frame("cam", viewer.run, b"not a jpeg")  # garbage: ignored
    manager.webcam_frame("cam", viewer.run, b"")  # empty: ignored
    manager.webcam_frame("cam", viewer.run, jpeg.tobytes())
    assert any(isinstance(event, CommentaryFinished) for event in sub)
    assert viewer.session.hub.latest.image.shape == (48, 64, 3)
    manager.webcam_frame("nobody", 1, jpeg.tobytes())  # no session: ignored


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
        page = Page(mgr, "tab")
        mgr.start("tab", SourceRequest("Upload", str(short_video)), "narrator", "balanced")
        page.until(is_type("ended"))
        saved = handlers.save_narration(mgr, "tab")
    finally:
        mgr.close_all()
    chunks = [parse_audio(m) for m in page.messages if isinstance(m, bytes) and m[0] == 2]
    assert chunks
    plays = [c[1] for c in chunks]
    assert plays == sorted(plays)  # each stamped with when it plays, in order
    rate, samples = chunks[0][3], chunks[0][4]
    assert rate == 24000 and samples.dtype == np.int16 and len(samples) > rate * 0.3
    assert np.abs(samples.astype(np.int32)).max() > 1000  # real speech, not silence
    with wave.open(saved["value"]) as wav:
        assert wav.getframerate() == 24000 and wav.getnframes() >= sum(len(c[4]) for c in chunks)
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
    from webui.sources import make_source

    request = SourceRequest("URL", url="rtsp://cam.example.com:8554/live")
    local = make_source(request, UrlGuard.build(False), "udp")
    assert isinstance(local, StreamSource) and local.rtsp_transport == "udp" and local.uri == request.url
    shared = make_source(request, UrlGuard(True, resolve=lambda host: ["93.184.216.34"]))
    assert shared.uri == "rtsp://93.184.216.34:8554/live"
