"""The transformers backend end to end on tiny random models: real Auto classes, chat templates and streamer.

Random weights give garbage text, so these tests check structure and behaviour, never wording.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.backends.base import CommentRequest, create_backend
from pipeline.backends.transformers_vlm import THREAD_NAME, TransformersVLM
from pipeline.config import Settings
from pipeline.errors import BackendError
from pipeline.events import CommentaryFinished, ErrorEvent, RuleCheck
from pipeline.frames import Frame
from pipeline.prompts import PromptParts
from tests.helpers.media import Segment, write_video
from tests.helpers.offline import run_offline
from tests.helpers.session_run import one_camera, play, watch_desk
from tests.helpers.tiny_models import tiny_model_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def qwen() -> Iterator[TransformersVLM]:
    backend = TransformersVLM.from_settings(Settings(model=str(tiny_model_dir("qwen2vl")), device="cpu"))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def llava() -> Iterator[TransformersVLM]:
    backend = TransformersVLM.from_settings(Settings(model=str(tiny_model_dir("llava")), device="cpu"))
    yield backend
    backend.close()


def frames(n: int, size: tuple[int, int] = (64, 48)) -> list[Frame]:
    rng = np.random.default_rng(7)
    w, h = size
    return [
        Frame(
            rng.integers(0, 256, (h, w, 3), dtype=np.uint8), media_time=i * 0.5, wall_time=0.0, index=i, source_id="t"
        )
        for i in range(n)
    ]


def make_request(n_frames: int = 4, max_tokens: int = 20, temperature: float = 0.0) -> CommentRequest:
    prompt = PromptParts(system="You are a sports commentator.", user="Comment on what is happening now.")
    return CommentRequest(frames=frames(n_frames), prompt=prompt, max_tokens=max_tokens, temperature=temperature)


def generate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


class Spy:
    """Wraps a model's generate to keep what it returned (the token ids), or to replace it."""

    def __init__(self, backend: TransformersVLM, monkeypatch: pytest.MonkeyPatch, replacement=None) -> None:
        self.outputs = []
        self.kwargs = {}
        self.prompt_len = 0
        original = backend._model.generate

        def generate(**kwargs):
            self.kwargs = kwargs
            self.prompt_len = kwargs["input_ids"].shape[1]
            if replacement is not None:
                return replacement(original, **kwargs)
            out = original(**kwargs)
            self.outputs.append(out)
            return out

        monkeypatch.setattr(backend._model, "generate", generate)

    def new_ids(self) -> list[int]:
        return self.outputs[-1][0, self.prompt_len :].tolist()


@pytest.fixture
def request_fixture(request):
    return lambda kind: request.getfixturevalue(kind)


@pytest.mark.parametrize("kind", ["qwen", "llava"])
def test_streams_deltas_that_join_to_the_decoded_output(kind, request_fixture, monkeypatch):
    backend = request_fixture(kind)
    spy = Spy(backend, monkeypatch)
    req = make_request(n_frames=4, max_tokens=20)
    deltas = list(backend.stream(req))
    assert len(deltas) > 1
    assert all(isinstance(d, str) and d for d in deltas)
    ids = spy.new_ids()
    assert 0 < len(ids) <= 20
    assert "".join(deltas) == backend._tokenizer.decode(ids, skip_special_tokens=True)
    assert req.timings["model_start"] <= req.timings["model_first_token"] <= time.perf_counter()
    assert not generate_threads()


def test_each_frame_becomes_one_image_block(qwen, monkeypatch):
    spy = Spy(qwen, monkeypatch)
    req = make_request(n_frames=3)
    req.trigger = "start"  # a full prefill, so generate() gets every frame's pixels and grid
    assert list(qwen.stream(req))
    ids = spy.kwargs["input_ids"][0].tolist()
    config = qwen._model.config
    assert ids.count(config.vision_start_token_id) == 3
    assert ids.count(config.image_token_id) == 3 * 4  # a 64×48 frame → 4×4 patches → 2×2 merged tokens
    assert spy.kwargs["image_grid_thw"].shape[0] == 3
    text = qwen._tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nYou are a sports commentator.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("Comment on what is happening now.<|im_end|>\n<|im_start|>assistant\n")


def test_max_tokens_caps_the_output(qwen, monkeypatch):
    spy = Spy(qwen, monkeypatch)
    text = "".join(qwen.stream(make_request(n_frames=2, max_tokens=5)))
    assert len(spy.new_ids()) <= 5
    assert len(qwen._tokenizer(text, add_special_tokens=False).input_ids) <= 5


def test_sampling_with_temperature_streams(qwen):
    deltas = list(qwen.stream(make_request(n_frames=1, max_tokens=8, temperature=0.9)))
    assert deltas


def test_text_only_request_without_frames(llava):
    assert list(llava.stream(make_request(n_frames=0, max_tokens=6)))


def test_cancel_mid_stream_ends_promptly_and_joins_the_thread(qwen, monkeypatch):
    spy = Spy(qwen, monkeypatch)
    req = make_request(max_tokens=200)
    got = []
    for delta in qwen.stream(req):
        got.append(delta)
        req.cancel.set()
    assert len(got) == 1  # the consumer checks cancel before every next delta
    assert len(spy.new_ids()) < 200
    assert not generate_threads()


def test_request_cancelled_before_start_yields_nothing(qwen, monkeypatch):
    spy = Spy(qwen, monkeypatch)
    req = make_request()
    req.cancel.set()
    assert list(qwen.stream(req)) == []
    assert not spy.kwargs and not generate_threads()


def test_consumer_leaving_early_stops_and_joins_the_thread(qwen, monkeypatch):
    spy = Spy(qwen, monkeypatch)
    req = make_request(max_tokens=200)
    stream = qwen.stream(req)
    assert next(stream)
    stream.close()
    assert not generate_threads()
    assert len(spy.new_ids()) < 200
    assert not req.cancel.is_set()  # the caller's event is theirs: leaving uses a private stop flag


def test_exception_inside_generate_surfaces_as_backend_error(qwen, monkeypatch):
    def explode(original, **kwargs):
        raise RuntimeError("boom in generate")

    Spy(qwen, monkeypatch, replacement=explode)
    started = time.perf_counter()
    with pytest.raises(BackendError, match="boom in generate"):
        list(qwen.stream(make_request()))
    assert time.perf_counter() - started < 5
    assert not generate_threads()


def test_exception_after_some_tokens_still_surfaces(qwen, monkeypatch):
    def explode_late(original, **kwargs):
        original(**kwargs)
        raise RuntimeError("late failure")

    Spy(qwen, monkeypatch, replacement=explode_late)
    got = []
    with pytest.raises(BackendError, match="late failure"):
        for delta in qwen.stream(make_request(max_tokens=6)):
            got.append(delta)
    assert got
    assert not generate_threads()


def test_a_stalled_model_times_out(qwen, monkeypatch):
    def stall(original, **kwargs):
        stopping = kwargs["stopping_criteria"]
        ids = kwargs["input_ids"]
        while not bool(stopping(ids, None).all()):  # hangs like a stuck kernel until told to stop
            threading.Event().wait(0.01)

    Spy(qwen, monkeypatch, replacement=stall)
    monkeypatch.setattr(qwen, "token_timeout", 0.3)
    started = time.perf_counter()
    with pytest.raises(BackendError, match=re.escape("no token for 0.3 s")):
        list(qwen.stream(make_request()))
    assert time.perf_counter() - started < 5
    assert not generate_threads()


def test_generation_is_serialised_across_sessions(qwen, monkeypatch):
    active = []
    overlap = []

    def tracked(original, **kwargs):
        active.append(1)
        overlap.append(len(active))
        try:
            return original(**kwargs)
        finally:
            active.pop()

    Spy(qwen, monkeypatch, replacement=tracked)
    results: list[list[str]] = [[], []]

    def consume(i: int) -> None:
        results[i] = list(qwen.stream(make_request(n_frames=2, max_tokens=10)))

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(results) and max(overlap) == 1


def test_registry_creates_it_by_name():
    choice = create_backend(Settings(backend="transformers", model=str(tiny_model_dir("qwen2vl")), device="cpu"))
    try:
        assert isinstance(choice.backend, TransformersVLM) and not choice.fallback
    finally:
        choice.backend.close()


def test_description_and_capabilities(qwen):
    assert qwen.description == "transformers · qwen2vl on cpu (float32, incremental prefill)"
    assert qwen.capabilities.images and not qwen.capabilities.video
    assert qwen.capabilities.max_frames == 8


def test_close_is_idempotent_and_stream_after_close_fails():
    backend = TransformersVLM(str(tiny_model_dir("llava")), device="cpu")
    backend.close()
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        list(backend.stream(make_request()))


def test_missing_model_setting_says_how_to_pass_one():
    with pytest.raises(BackendError, match=r"--model.*ONLOOKER_MODEL"):
        TransformersVLM.from_settings(Settings(model=None, device="cpu"))


def test_local_path_that_does_not_exist(tmp_path):
    missing = tmp_path / "nope" / "model"
    with pytest.raises(BackendError, match=re.escape(f"model path '{missing}' does not exist")):
        TransformersVLM(str(missing), device="cpu")


def test_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BackendError, match=re.escape("not a transformers model directory: it has no config.json")):
        TransformersVLM(str(tmp_path), device="cpu")


def test_text_only_model_is_refused_saying_what_it_is(tmp_path):
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 16}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(BackendError, match=r"is a text-only language model \(model_type 'llama', LlamaForCausalLM\)"):
        TransformersVLM(str(tmp_path), device="cpu")


def test_unavailable_device_is_explained():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(BackendError, match="CUDA is not available"):
        TransformersVLM(str(tiny_model_dir("qwen2vl")), device="cuda")


def test_uncached_hub_model_offline_says_how_to_get_it(tmp_path):
    code = (
        "from pipeline.backends.transformers_vlm import TransformersVLM\n"
        "from pipeline.errors import BackendError\n"
        "try:\n"
        "    TransformersVLM('onlooker-test/no-such-model', device='cpu')\n"
        "except BackendError as exc:\n"
        "    print(exc)\n"
    )
    assert run_offline(code, tmp_path) == (
        "model 'onlooker-test/no-such-model' is not in the local Hugging Face cache and the hub cannot be reached; "
        "download it on a connected machine with `huggingface-cli download onlooker-test/no-such-model` "
        "(or copy it) and pass its local path with --model"
    )
    assert not (tmp_path / "hf" / "hub" / "models--onlooker-test--no-such-model" / "snapshots").exists()


def test_rule_checks_through_a_tiny_vlm_are_read_strictly_beside_its_comments(qwen, tmp_path):
    clip = write_video(tmp_path / "clip.mp4", [Segment(1.5, 0), Segment(1.5, 1, moving=True)])
    run = play(one_camera(qwen, watch=watch_desk(qwen, "door=a person is at the door", interval=1.0)), clip)
    checks = run.of(RuleCheck)
    assert checks and {c.answer for c in checks} <= {"yes", "no", "none"}
    assert all(c.reason for c in checks if c.answer == "none")
    assert not run.of(ErrorEvent) and run.of(CommentaryFinished)
