"""The OpenAI-compatible backend against a real engine: llama-cpp-python's server on loopback, serving a
tiny random Qwen2-VL (GGUF + mmproj built offline by ``tests/helpers/gguf_models.py``). Random weights give
garbage text: the tests assert structure, timing and behaviour, never wording.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from pipeline.backends.base import CommentRequest
from pipeline.backends.openai_compat import THREAD_NAME, OpenAICompatible, build_messages, encode_frame
from pipeline.config import load_presets
from pipeline.errors import BackendError
from pipeline.events import Alert, CommentaryFinished, ErrorEvent, Opinion, RuleCheck
from pipeline.frames import Frame
from pipeline.prompts import PromptParts
from pipeline.scheduler import scheduler_for
from pipeline.second_opinion import OpinionOptions, SecondOpinion
from pipeline.sources.file import FileSource
from tests.helpers.llama_server import LlamaServer, missing_engine_reason
from tests.helpers.media import Segment, write_video
from tests.helpers.scripted_backend import ScriptedBackend
from tests.helpers.session_run import Watcher, one_camera, play, watch_desk

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(missing_engine_reason() is not None, reason=missing_engine_reason() or ""),
]


@pytest.fixture(scope="module")
def gguf() -> tuple:
    from tests.helpers.gguf_models import tiny_gguf_qwen2vl

    return tiny_gguf_qwen2vl()


@pytest.fixture(scope="module")
def server(gguf) -> Iterator[LlamaServer]:
    model, mmproj = gguf
    with LlamaServer(model, mmproj) as running:
        yield running


@pytest.fixture
def backend(server) -> Iterator[OpenAICompatible]:
    made = OpenAICompatible(server.base_url, token_timeout=30, first_token_timeout=30)
    yield made
    made.close()


def frame(seed: int = 1, size: tuple[int, int] = (360, 640)) -> Frame:
    image = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    return Frame(image, media_time=float(seed), wall_time=time.time(), index=seed, source_id="t")


def request(frames: int = 1, max_tokens: int = 16, **kwargs) -> CommentRequest:
    return CommentRequest(
        frames=[frame(k) for k in range(frames)],
        prompt=PromptParts("You comment on live video.", "What is happening?"),
        max_tokens=max_tokens,
        temperature=0,
        **kwargs,
    )


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def test_frames_go_as_base64_jpeg_parts_resized_to_the_limit():
    url = encode_frame(frame(size=(720, 1280)).image, max_side=320, quality=70)
    import base64

    import cv2

    jpeg = base64.b64decode(url.removeprefix("data:image/jpeg;base64,"))
    assert url.startswith("data:image/jpeg;base64,") and cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1).shape == (
        180,
        320,
        3,
    )
    messages = build_messages(request(frames=3), 320, 70)
    assert messages[0] == {"role": "system", "content": "You comment on live video."}
    parts = messages[1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "image_url", "text"]


def test_finds_the_model_probes_images_and_streams_deltas(server, backend):
    assert backend.model == server.model_id  # the only model the server lists
    assert backend.image_tokens is not None and backend.image_tokens >= 8  # the picture was counted
    assert "tokens a frame" in backend.description
    req = request(frames=2)
    deltas = list(backend.stream(req))
    assert len(deltas) > 1 and all(isinstance(d, str) and d for d in deltas)
    assert req.timings["model_start"] < req.timings["model_first_token"]
    assert not stream_threads()


def test_a_server_without_the_projector_is_refused_not_used_blind(gguf):
    model, _ = gguf
    with LlamaServer(model, None) as text_only, pytest.raises(BackendError, match="ignores images") as err:
        OpenAICompatible(text_only.base_url)
    assert "--mmproj" in str(err.value)


def test_cancel_after_the_first_delta_closes_the_stream(backend):
    # llama-cpp-python's server finishes a generation even after the client left, so keep it short.
    req = request(max_tokens=48)
    seen = []
    for delta in backend.stream(req):
        seen.append(delta)
        req.cancel.set()
    assert len(seen) <= 2  # at most one more delta was already on its way
    assert not stream_threads()
    assert list(backend.stream(request()))  # the server serves the next request normally


def test_a_slow_first_token_is_a_timeout_that_names_its_setting(server):
    slow = OpenAICompatible(server.base_url, first_token_timeout=0.001, retries=0)
    try:
        with pytest.raises(BackendError, match=r"--first-token-timeout / ONLOOKER_FIRST_TOKEN_TIMEOUT") as err:
            list(slow.stream(request(frames=2)))
        assert err.value.transient
    finally:
        slow.close()


def test_a_saturated_engine_makes_a_camera_wait_for_a_slot_instead_of_skipping(server):
    one_slot = OpenAICompatible(server.base_url, max_in_flight=1)
    scheduler = scheduler_for(one_slot)
    try:
        assert scheduler.slots == 1
        first = scheduler.ask("camera-a", "active")
        stream = one_slot.stream(request(max_tokens=64))
        assert first.granted is not None and next(stream)  # holds the only slot while it streams
        second = scheduler.ask("camera-b", "active")
        assert second.granted is None  # it waits; the beat is not lost
        stream.close()
        scheduler.finish(first)
        assert second.wait(5) and list(one_slot.stream(request()))  # its turn, with the newest frames
        scheduler.finish(second)
    finally:
        one_slot.close()


def test_server_killed_mid_stream_is_a_clear_error_and_it_recovers_when_back(gguf):
    model, mmproj = gguf
    with LlamaServer(model, mmproj) as server:
        backend = OpenAICompatible(server.base_url, retries=0)
        try:
            stream = backend.stream(request(max_tokens=400))
            assert next(stream)
            server.kill()
            with pytest.raises(BackendError) as err:
                list(stream)
            assert err.value.transient and ("cut off" in str(err.value) or "cannot reach" in str(err.value))
            with pytest.raises(BackendError, match="cannot reach the OpenAI-compatible server") as down:
                list(backend.stream(request()))
            assert down.value.transient
            server.restart()
            assert list(backend.stream(request()))
            assert not stream_threads()
        finally:
            backend.close()


def test_a_session_keeps_going_while_the_server_is_away(gguf, tmp_path):
    """Transient errors are reported, never fatal: the session outlives a server restart."""
    model, mmproj = gguf
    video = write_video(tmp_path / "moving.mp4", [Segment(14, 0, moving=True)])
    tuning = load_presets().presets["sniper"].model_copy(update={"min_interval": 0.5, "max_frames": 1})
    with LlamaServer(model, mmproj) as server:
        backend = OpenAICompatible(server.base_url, retries=0, max_frames=1)
        session = one_camera(backend, profile="sports", tuning=tuning)
        watcher = Watcher(session)
        session.start(FileSource(str(video)))
        try:
            watcher.until(lambda e: isinstance(e, CommentaryFinished) and not e.suppressed, "a first comment", 60)
            server.kill()
            watcher.until(lambda e: isinstance(e, ErrorEvent) and "cannot reach" in e.message, "an error", 60)
            server.restart()
            watcher.until(lambda e: isinstance(e, CommentaryFinished) and e.suppressed == "", "a comment again", 60)
            seen = watcher.seen
            assert not any(isinstance(e, ErrorEvent) and e.fatal for e in seen)
            assert session.commentator.running
        finally:
            session.stop()
            backend.close()


def test_a_second_opinion_comes_back_as_an_event(server, short_video):
    options = OpinionOptions(server.base_url, server.model_id, task="summary", every=2)
    backend = ScriptedBackend([f"Comment number {n} about a new thing." for n in range(50)])
    tuning = load_presets().presets["sniper"].model_copy(update={"min_interval": 0.1, "active_interval": 0.2})
    session = one_camera(backend, tuning=tuning, consumers=[SecondOpinion(options)])
    watcher = Watcher(session)
    session.start(FileSource(str(short_video), loop=True))
    try:
        event = watcher.until(lambda e: isinstance(e, Opinion), "second opinion", 60)
        assert isinstance(event, Opinion)
        assert event.task == "summary" and event.text and not event.alert
    finally:
        session.stop()


def test_frames_can_go_as_one_video_part_at_their_capture_rate():
    import base64
    import io

    import av

    req = request(frames=4)
    for k, f in enumerate(req.frames):
        req.frames[k] = Frame(f.image, media_time=k * 0.5, wall_time=f.wall_time, index=k, source_id="t")
    messages = build_messages(req, max_side=320, quality=80, video=True)
    parts = messages[1]["content"]
    assert [p["type"] for p in parts] == ["video_url", "text"]
    data = base64.b64decode(parts[0]["video_url"]["url"].removeprefix("data:video/mp4;base64,"))
    with av.open(io.BytesIO(data)) as clip:
        stream = clip.streams.video[0]
        decoded = [frame.to_ndarray(format="rgb24") for frame in clip.decode(stream)]
        assert (stream.codec_context.width, stream.codec_context.height) == (320, 180)
        assert round(float(stream.average_rate)) == 2  # four frames over 1.5 s
    assert len(decoded) == 4
    assert build_messages(request(frames=1), 320, 80, video=True)[1]["content"][0]["type"] == "image_url"


def test_rule_checks_ask_the_engine_for_structured_output_and_garbage_is_no_verdict(server, short_video):
    """llama-cpp-python's server refuses OpenAI's json_schema form and takes json_object with the schema (a
    grammar): the backend learns that once. Random weights fill the grammar with nonsense (a confidence of
    8e35, a reason cut off by the token cap): each such answer is counted as no verdict, never an alert."""
    backend = OpenAICompatible(server.base_url, token_timeout=30, first_token_timeout=30)
    try:
        desk = watch_desk(backend, "door=a person is at the door", interval=1.0)
        run = play(one_camera(backend, watch=desk), short_video, speed=1.0)
    finally:
        backend.close()
    checks = run.of(RuleCheck)
    assert checks and backend._formats == ["json_object"]
    assert {c.answer for c in checks} <= {"yes", "no", "none"}
    assert all(c.reason for c in checks if c.answer == "none")
    yes_at = {c.t for c in checks if c.answer == "yes"}
    assert all(a.t in yes_at for a in run.of(Alert) if a.state == "started"), "an alert only ever follows a yes"
    assert not [e for e in run.of(ErrorEvent) if e.fatal]
    assert run.of(CommentaryFinished)
