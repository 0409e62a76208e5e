"""The MiniCPM backend on CPU against test doubles of the model objects (tests/minicpm_double.py).

The real MiniCPM-o / MiniCPM-V remote code cannot be fetched here, so these tests check what the backend asks
of the model (call order and argument shapes from docs/minicpm-api.md), the once-per-frame prefill bookkeeping,
streaming, cancellation, failures, the voice and ASR hooks, precision choice and every load error.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from offline import run_offline

from pipeline.backends import minicpm
from pipeline.backends.base import CommentRequest
from pipeline.backends.minicpm import (
    ASR_PROMPT,
    THREAD_NAME,
    VARIANTS,
    MiniCPM,
    PrefillLedger,
    check_transformers,
    choose_precision,
    clean_text,
    missing_packages,
    parse_chunk,
    variant_of,
)
from pipeline.errors import BackendError
from pipeline.frames import Frame
from pipeline.prompts import PromptParts
from pipeline.speech.engines import Speech
from pipeline.speech.transcribe import find_transcriber
from tests.minicpm_double import Loader, OmniDouble, VisionDouble, loader

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "You are a sports commentator."
USER = "Comment on what is happening now."
OMNI = set(minicpm.OMNI_PACKAGES)
O45, V45 = VARIANTS["openbmb/MiniCPM-o-4_5"], VARIANTS["openbmb/MiniCPM-V-4_5"]


def fake_find_spec(installed: set[str], missing: set[str] = frozenset()) -> Callable[..., Any]:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        if name in missing:
            return None
        return importlib.machinery.ModuleSpec(name, None) if name in installed else real(name, *args)

    return find_spec


@pytest.fixture(autouse=True)
def omni_packages(monkeypatch):
    """The voice packages (minicpmo-utils, soundfile, librosa) look installed unless a test says otherwise."""
    monkeypatch.setattr(minicpm.importlib.util, "find_spec", fake_find_spec(OMNI))


@pytest.fixture
def build(tmp_path) -> Iterator[Callable[..., MiniCPM]]:
    """``build(double, **kwargs)``: a MiniCPM on CPU loading ``double``; releases doubles and joins workers after."""
    made: list[tuple[MiniCPM, Any]] = []

    def make(double: Any, **kwargs: Any) -> MiniCPM:
        kwargs.setdefault("token_timeout", 5.0)
        backend = MiniCPM(
            model=str(kwargs.pop("model", tmp_path)),
            device="cpu",
            load=kwargs.pop("load", None) or loader(double),
            transformers_version="4.51.3",
            **kwargs,
        )
        made.append((backend, double))
        return backend

    yield make
    for backend, double in made:
        double.release.set()
        for thread in workers():
            thread.join(timeout=5)
        backend.close()
    assert not workers()


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def frame(i: int) -> Frame:
    """Frame ``i`` at 0.5·i s, every pixel red = i (the doubles record images by that value)."""
    return Frame(np.full((32, 48, 3), i, np.uint8), media_time=0.5 * i, wall_time=0.0, index=i, source_id="t")


def request(
    indices: range | list[int] = range(3),
    max_tokens: int = 20,
    temperature: float = 0.0,
    trigger: str = "active",
    stream_id: str = "s1",
    on_audio: Callable[[Speech], None] | None = None,
) -> CommentRequest:
    return CommentRequest(
        frames=[frame(i) for i in indices],
        prompt=PromptParts(SYSTEM, USER),
        max_tokens=max_tokens,
        temperature=temperature,
        trigger=trigger,
        stream_id=stream_id,
        on_audio=on_audio,
    )


def prefilled_frames(double: OmniDouble) -> list[int]:
    return [mark for p in double.prefills for mark in p["images"]]


# --- argument shapes ---


def test_a_comment_prefills_system_then_each_frame_then_the_prompt_then_generates(build):
    double = OmniDouble(replies=["The keeper dives left."])
    backend = build(double, max_slice_nums=2)
    req = request(range(3), max_tokens=20, stream_id="s1")
    assert "".join(backend.stream(req)) == "The keeper dives left."

    names = [name for name, _ in double.calls if name not in ("init_tts", "init_token2wav_cache")]
    assert names == [
        "reset_session",
        *["streaming_prefill"] * 5,
        "streaming_generate",
        "reply",
        "reply_end",
    ]
    system, *images, prompt = double.prefills
    assert system == {"session_id": "s1", "role": "system", "images": [], "texts": [SYSTEM]}
    for i, prefill in enumerate(images):
        assert prefill == {"session_id": "s1", "role": "user", "images": [i], "texts": [], "max_slice_nums": 2}
    assert prompt == {"session_id": "s1", "role": "user", "images": [], "texts": [USER]}
    (generate,) = double.named("streaming_generate")
    assert generate["session_id"] == "s1"
    assert generate["max_new_tokens"] == 20
    assert generate["do_sample"] is False
    assert generate["generate_audio"] is False and generate["use_tts_template"] is False
    assert double.kv == len(SYSTEM) // 4 + 3 * 64 + len(USER) // 4 + 4  # prefills plus one per word generated


def test_sampling_follows_the_temperature(build):
    double = OmniDouble()
    backend = build(double)
    list(backend.stream(request(temperature=0.8)))
    (generate,) = double.named("streaming_generate")
    assert generate["do_sample"] is True and generate["temperature"] == 0.8


# --- streaming ---


def test_deltas_arrive_as_the_model_yields_them_cleaned_and_timed(build):
    double = OmniDouble(replies=["Corner kick for the home side."], hold_after=1)
    backend = build(double)
    req = request()
    stream = backend.stream(req)
    first = next(stream)  # the double is now blocked before its second word: nothing is buffered to the end
    assert first == "Corner "
    assert double.holding.wait(5) and double.generated == 1
    assert "model_first_token" in req.timings
    double.release.set()
    rest = list(stream)
    assert first + "".join(rest) == "Corner kick for the home side."  # <|tts_eos|> and <|im_end|> are gone
    assert all(delta and "<|" not in delta for delta in rest)
    assert req.timings["model_start"] <= req.timings["model_first_token"] <= time.perf_counter()
    assert double.finished == 1 and not workers()


def test_request_cancelled_before_start_touches_nothing(build):
    double = OmniDouble()
    backend = build(double)
    req = request()
    req.cancel.set()
    assert list(backend.stream(req)) == []
    assert not double.prefills and not double.named("streaming_generate")


# --- incremental prefill bookkeeping ---


def test_each_frame_is_prefilled_once_across_overlapping_windows(build):
    double = OmniDouble()
    backend = build(double)
    for window in (range(0, 4), range(2, 7), range(5, 10)):  # a sliding window over frames 0..9
        assert "".join(backend.stream(request(window)))
    assert prefilled_frames(double) == list(range(10))  # no duplicates, all covered, in order
    assert len(double.named("reset_session")) == 1
    assert [p["texts"] for p in double.prefills].count([SYSTEM]) == 1
    assert [p["texts"] for p in double.prefills].count([USER]) == 3
    assert backend.ledger.prefilled == 10 and backend.ledger.resets == 1


def test_without_incremental_prefill_every_comment_prefills_the_whole_window(build):
    double = OmniDouble()
    backend = build(double, incremental=False)
    for window in (range(0, 4), range(2, 7)):
        assert "".join(backend.stream(request(window)))
    assert len(double.named("reset_session")) == 2  # the naive baseline: start over each time
    assert prefilled_frames(double) == [0, 1, 2, 3, 2, 3, 4, 5, 6]
    assert "full prefill" in backend.description


def test_a_new_commentary_start_begins_a_fresh_model_session(build):
    double = OmniDouble()
    backend = build(double)
    list(backend.stream(request(range(0, 3))))
    list(backend.stream(request(range(0, 3), trigger="start")))  # same id, but a new run of the commentator
    assert len(double.named("reset_session")) == 2 and prefilled_frames(double) == [0, 1, 2, 0, 1, 2]


def test_a_scene_cut_starts_the_session_over_with_the_cut_frames(build):
    double = OmniDouble()
    backend = build(double)
    list(backend.stream(request(range(0, 4))))
    list(backend.stream(request(range(3, 7), trigger="scene_cut")))
    list(backend.stream(request(range(5, 9))))
    assert len(double.named("reset_session")) == 2
    system_at = [i for i, p in enumerate(double.prefills) if p["role"] == "system"]
    assert len(system_at) == 2
    after_cut = [mark for p in double.prefills[system_at[1] :] for mark in p["images"]]
    assert after_cut == [3, 4, 5, 6, 7, 8]  # the cut's whole window (its cache was dropped), then only new ones


def test_another_onlooker_session_starts_the_model_session_over(build):
    double = OmniDouble()
    backend = build(double)
    list(backend.stream(request(range(0, 3), stream_id="s1")))
    list(backend.stream(request(range(0, 3), stream_id="s2")))
    list(backend.stream(request(range(1, 4), stream_id="s1")))
    assert len(double.named("reset_session")) == 3
    assert [(p["session_id"], p["images"]) for p in double.prefills if p["images"]] == [
        *[("s1", [i]) for i in range(3)],
        *[("s2", [i]) for i in range(3)],
        *[("s1", [i]) for i in range(1, 4)],
    ]
    assert [g["session_id"] for g in double.named("streaming_generate")] == ["s1", "s2", "s1"]


def test_the_context_budget_starts_the_session_over(build):
    double = OmniDouble()
    backend = build(double)
    # per comment: system 15 at a reset, 64 per new frame, prompt 16, max_tokens 20
    backend.ledger = PrefillLedger(budget=300)
    list(backend.stream(request(range(0, 2))))  # 15 + 128 + 16 + 20 = 179
    assert backend.ledger.tokens == 179
    list(backend.stream(request(range(1, 3))))  # 179 + 64 + 16 = 259 fits: frame 2 only → 279
    assert backend.ledger.tokens == 279 and len(double.named("reset_session")) == 1
    list(backend.stream(request(range(2, 4))))  # 279 + 64 + 16 = 359 > 300: start over with the window
    assert len(double.named("reset_session")) == 2
    assert prefilled_frames(double) == [0, 1, 2, 2, 3]
    assert backend.ledger.tokens == 179


@pytest.mark.parametrize("how", ["cancelled", "failed"])
def test_an_unfinished_turn_makes_the_next_comment_start_over(build, how):
    cancelled = how == "cancelled"
    double = OmniDouble(
        replies=["one two three four"], hold_after=1 if cancelled else None, fail_after=None if cancelled else 2
    )
    backend = build(double)
    req = request(range(0, 3))
    if cancelled:
        for _ in backend.stream(req):
            req.cancel.set()
            double.release.set()  # cancelled mid-reply: the double goes on only once the cancel is set
    else:
        with pytest.raises(BackendError):
            list(backend.stream(req))
    assert backend.ledger.owner is None
    double.fail_after = None
    assert "".join(backend.stream(request(range(1, 4)))) == "one two three four"
    assert len(double.named("reset_session")) == 2
    assert prefilled_frames(double) == [0, 1, 2, 1, 2, 3]


# --- cancellation ---


def test_cancel_after_the_first_delta_closes_the_models_generator(build):
    double = OmniDouble(replies=[" ".join(f"w{i}" for i in range(50))], hold_after=1)
    backend = build(double)
    req = request(max_tokens=50)
    got = []
    started = time.perf_counter()
    for delta in backend.stream(req):
        got.append(delta)
        req.cancel.set()
        double.release.set()  # only now can the double go on: the worker must see the cancel at its next word
    assert got == ["w0 "]
    assert time.perf_counter() - started < 2
    assert double.closed_early == 1 and double.finished == 0  # GeneratorExit reached the model's generator
    assert double.generated < 50
    assert not workers()


def test_the_consumer_leaving_early_closes_the_models_generator(build):
    double = OmniDouble(replies=[" ".join(f"w{i}" for i in range(50))], hold_after=1)
    backend = build(double, token_timeout=0.3)
    req = request(max_tokens=50)
    stream = backend.stream(req)
    assert next(stream) == "w0 "
    assert double.holding.wait(5)
    stream.close()  # the worker is stuck in the double: close waits token_timeout for it, then gives up
    double.release.set()
    for thread in workers():
        thread.join(timeout=5)
    assert not workers()
    assert double.closed_early == 1 and double.generated < 50
    assert not req.cancel.is_set()  # leaving uses the worker's own stop flag, not the caller's event
    assert backend.ledger.owner is None


def test_the_chat_path_closes_its_stream_on_cancel(build):
    double = VisionDouble(replies=[" ".join(f"w{i}" for i in range(50))], hold_after=1)
    backend = build(double)
    req = request(max_tokens=50)
    got = []
    for delta in backend.stream(req):
        got.append(delta)
        req.cancel.set()
        double.release.set()
    assert got == ["w0 "] and double.closed_early == 1 and not workers()


# --- failures ---


@pytest.mark.parametrize("fail_after", [0, 2])
def test_an_exception_in_the_model_surfaces_as_backend_error(build, tmp_path, fail_after):
    double = OmniDouble(replies=["one two three four"], fail_after=fail_after)
    backend = build(double)
    got = []
    message = f"model '{tmp_path}' failed while generating: RuntimeError: boom in the model's generate"
    with pytest.raises(BackendError, match=re.escape(message)):
        for delta in backend.stream(request()):
            got.append(delta)
    assert got == ["one ", "two "][:fail_after]
    assert not workers()


def test_a_stalled_model_times_out(build):
    double = OmniDouble(hold_after=0)
    backend = build(double, token_timeout=0.3)
    started = time.perf_counter()
    with pytest.raises(BackendError, match=re.escape("produced no token for 0.3 s (--token-timeout")):
        list(backend.stream(request()))
    assert time.perf_counter() - started < 5
    assert double.holding.is_set()
    double.release.set()  # the fixture would too; here to check the stuck worker then stops and closes the reply
    for thread in workers():
        thread.join(timeout=5)
    assert not workers() and double.closed_early == 1


def test_generation_is_serialised_across_sessions(build):
    double = OmniDouble(replies=["one two three"], hold_after=1)
    backend = build(double)
    results: dict[str, list[str]] = {}

    def consume(stream_id: str) -> None:
        results[stream_id] = list(backend.stream(request(stream_id=stream_id)))

    first = threading.Thread(target=consume, args=("s1",))
    first.start()
    assert double.holding.wait(5)  # s1 is mid-reply, holding the model
    second = threading.Thread(target=consume, args=("s2",))
    second.start()
    deadline = time.perf_counter() + 5
    while len(workers()) < 2 and time.perf_counter() < deadline:  # s2's worker is up, waiting for the model
        threading.Event().wait(0.01)
    assert len(workers()) == 2
    assert not double.overlap.wait(0.5)  # s2 gets no turn with the model while s1's reply is unfinished
    double.release.set()
    first.join(5)
    second.join(5)
    assert results == {"s1": ["one ", "two ", "three"], "s2": ["one ", "two ", "three"]}
    sessions = [kw.get("session_id", name) for name, kw in double.calls]
    s1_done = sessions.index("reply_end")
    assert set(sessions[:s1_done]) - {"init_tts", "init_token2wav_cache", "reset_session", "reply"} == {"s1"}
    assert "s1" not in sessions[s1_done:]


# --- voice ---


def test_the_models_voice_goes_to_on_audio(build):
    double = OmniDouble(replies=["Goal for the visitors."])
    backend = build(double)
    assert backend.capabilities.audio_out and backend.voice_error == ""
    assert double.named("init_tts") == [{"streaming": True, "model_dir": None}]
    assert double.named("init_token2wav_cache") == [{"prompt_speech_16k": None}]
    speech: list[Speech] = []
    text = "".join(backend.stream(request(on_audio=speech.append)))
    assert text == "Goal for the visitors."
    (generate,) = double.named("streaming_generate")
    assert generate["generate_audio"] is True and generate["use_tts_template"] is True
    assert len(speech) == 4
    for chunk in speech:
        assert chunk.sample_rate == 24_000 and chunk.samples.dtype == np.int16
        assert chunk.samples.shape == (2400,) and (chunk.samples == round(0.1 * 32767)).all()


def test_a_voice_that_cannot_start_leaves_text_commentary(build):
    double = OmniDouble(tts_error=RuntimeError("no token2wav assets"))
    backend = build(double)
    assert not backend.capabilities.audio_out
    assert backend.voice_error == (
        "the model's voice could not start (RuntimeError: no token2wav assets); using espeak-ng"
    )
    speech: list[Speech] = []
    assert "".join(backend.stream(request(on_audio=speech.append)))
    assert speech == []
    assert double.named("streaming_generate")[0]["generate_audio"] is False
    assert callable(backend.transcribe)  # speech recognition does not need the voice


# --- vision only ---


def test_vision_only_loads_no_voice_and_no_speech_recognition(build, monkeypatch):
    monkeypatch.setattr(minicpm.importlib.util, "find_spec", fake_find_spec(set(), missing=OMNI))
    double = OmniDouble()
    load = loader(double)
    backend = build(double, vision_only=True, load=load)
    assert [call["vision_only"] for call in load.calls] == [True]
    assert load.calls[0]["dtype"] == torch.float32 and load.calls[0]["attn"] == "sdpa"
    assert load.calls[0]["device"] == torch.device("cpu")
    assert not double.named("init_tts") and not double.named("init_token2wav_cache")
    assert not backend.capabilities.audio_out and "vision-only" in backend.voice_error
    assert not hasattr(backend, "transcribe")
    transcriber, reason = find_transcriber(None, backend)
    assert transcriber is None and reason.startswith("Speech input is off")
    speech: list[Speech] = []
    assert "".join(backend.stream(request(on_audio=speech.append)))
    assert speech == [] and double.named("streaming_generate")[0]["generate_audio"] is False


def test_a_model_without_the_streaming_api_goes_through_chat(build):
    double = VisionDouble(replies=["A quiet street at night."])
    backend = build(double, max_slice_nums=3)
    assert not backend.streaming and not backend.capabilities.audio_out
    assert not hasattr(backend, "transcribe")
    deltas = list(backend.stream(request(range(4), max_tokens=30)))
    assert "".join(deltas) == "A quiet street at night."
    assert all("<|" not in d for d in deltas)
    (chat,) = double.named("chat")
    (msg,) = chat["msgs"]
    assert msg["role"] == "user"
    *images, text = msg["content"]
    assert [image.getpixel((0, 0))[0] for image in images] == [0, 1, 2, 3]
    assert {image.size for image in images} == {(48, 32)} and {image.mode for image in images} == {"RGB"}
    assert text == USER
    assert chat["system_prompt"] == SYSTEM
    assert chat["stream"] is True and chat["sampling"] is True and chat["do_sample"] is False
    assert chat["use_image_id"] is False and chat["max_slice_nums"] == 3
    assert chat["max_new_tokens"] == 30 and chat["num_beams"] == 1
    assert "temporal_ids" not in chat  # an unknown checkpoint is not known to take video


def test_minicpm_v_gets_temporal_ids_for_its_frames(build, tmp_path, monkeypatch):
    monkeypatch.setattr(minicpm, "locate_model", lambda model, allow_patterns: tmp_path)
    double = VisionDouble()
    backend = build(double, model="openbmb/MiniCPM-V-4_5")
    assert backend.capabilities.video and backend.model_id == "openbmb/MiniCPM-V-4_5"
    assert not hasattr(backend, "transcribe")
    list(backend.stream(request([2, 3, 5, 6, 8])))
    assert double.named("chat")[0]["temporal_ids"] == [[10, 15, 25], [30, 40]]  # 0.1 s ticks, groups of 3


# --- speech recognition hook ---


def test_the_omni_model_transcribes_spoken_instructions(build):
    double = OmniDouble()
    backend = build(double)
    list(backend.stream(request()))
    assert backend.ledger.owner == "s1"
    samples = np.zeros(16_000, np.float32)
    assert backend.transcribe(16_000, samples) == "Focus on the goalkeeper."
    (chat,) = double.named("chat")
    assert chat["msgs"][0]["role"] == "user"
    assert chat["msgs"][0]["content"][0] == ASR_PROMPT and chat["msgs"][0]["content"][1] is samples
    assert chat["generate_audio"] is False and chat["do_sample"] is False
    assert backend.ledger.owner is None  # the chat turn may have disturbed the streaming session

    transcriber, reason = find_transcriber(None, backend)
    assert transcriber is not None and transcriber.name == "model" and reason == ""
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(8000) / 16_000)).astype(np.float32)
    assert transcriber.transcribe(16_000, tone) == "Focus on the goalkeeper."


# --- precision and variants ---


@pytest.mark.parametrize(
    ("requested", "free_gb", "variant", "expected", "why"),
    [
        ("auto", 24.0, O45, "bf16", "24 GB free, BF16 needs ~19 GB"),
        ("auto", 19.0, O45, "bf16", "19 GB free, BF16 needs ~19 GB"),
        ("auto", 12.0, O45, "int4", "12 GB free: too little for BF16 (~19 GB), INT4 fits"),
        ("auto", 10.0, V45, "int4", "10 GB free: too little for BF16 (~18 GB), INT4 fits"),
        ("auto", 20.0, V45, "bf16", "20 GB free, BF16 needs ~18 GB"),
        ("int4", 80.0, O45, "int4", "--precision int4"),
        ("bf16", 4.0, O45, "bf16", "--precision bf16"),
        ("auto", None, O45, "bf16", "no GPU: full precision on the CPU"),
        ("auto", 12.0, None, "bf16", "a local or unknown checkpoint is loaded as it is"),
    ],
)
def test_choose_precision(requested, free_gb, variant, expected, why):
    assert choose_precision(requested, free_gb, variant) == (expected, why)


def test_too_little_gpu_memory_names_both_figures_and_the_int4_repo():
    with pytest.raises(BackendError) as info:
        choose_precision("auto", 8.0, O45)
    message = str(info.value)
    assert message.startswith("not enough GPU memory: 8.0 GB free, MiniCPM needs ~19 GB in BF16 or ~11 GB in INT4")
    assert "(openbmb/MiniCPM-o-4_5-awq)" in message and "--vision-only" in message


@pytest.mark.parametrize(
    ("model", "family", "int4"),
    [
        ("openbmb/MiniCPM-o-4_5", "o", "openbmb/MiniCPM-o-4_5-awq"),
        ("openbmb/minicpm-o-4_5-AWQ", "o", "openbmb/MiniCPM-o-4_5-awq"),
        ("openbmb/MiniCPM-V-4_5", "v", "openbmb/MiniCPM-V-4_5-AWQ"),
        ("openbmb/MiniCPM-V-4_5-AWQ", "v", "openbmb/MiniCPM-V-4_5-AWQ"),
    ],
)
def test_variant_of_known_checkpoints(model, family, int4):
    variant = variant_of(model)
    assert variant is not None and variant.family == family and variant.int4 == int4


@pytest.mark.parametrize("model", ["openbmb/MiniCPM-o-2_6", "/models/minicpm", "Qwen/Qwen2-VL-2B-Instruct"])
def test_variant_of_unknown_checkpoints(model):
    assert variant_of(model) is None


def test_explicit_int4_switches_to_the_int4_repository_and_asks_for_its_loader(build):
    with pytest.raises(BackendError, match=re.escape("MiniCPM needs more packages here: run `pip install autoawq`")):
        build(OmniDouble(), model="openbmb/MiniCPM-o-4_5", precision="int4")


# --- load errors ---


def test_no_cuda_with_device_auto_says_it_needs_an_nvidia_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    load = loader(OmniDouble())
    with pytest.raises(BackendError, match=r"MiniCPM needs an NVIDIA GPU \(CUDA\), and torch sees none.*--device cpu"):
        MiniCPM(model=str(tmp_path), device="auto", load=load, transformers_version="4.51.3")
    assert not load.calls


def test_wrong_transformers_version_says_which_to_install(tmp_path):
    load = loader(OmniDouble())
    with pytest.raises(BackendError, match=re.escape("this is 4.57.0; run `pip install transformers==4.51.3`")):
        MiniCPM(model=str(tmp_path), device="cpu", load=load, transformers_version="4.57.0")
    assert not load.calls
    check_transformers("4.51.0")
    check_transformers("4.51.3")


def test_missing_voice_packages_give_the_exact_pip_command(build, monkeypatch):
    monkeypatch.setattr(minicpm.importlib.util, "find_spec", fake_find_spec(set(), missing=OMNI))
    with pytest.raises(BackendError) as info:
        build(OmniDouble())
    assert str(info.value) == (
        'MiniCPM needs more packages here: run `pip install "minicpmo-utils[all]>=1.0.2" soundfile librosa`'
    )


def test_missing_packages_lists_only_what_cannot_be_imported():
    assert missing_packages({"onlooker_no_such_module": "no-such>=1", "json": "json"}) == ["no-such>=1"]
    assert missing_packages({}) == []


@pytest.mark.parametrize(
    "error",
    [OSError("no file named\n  modeling_minicpmo.py"), ImportError("No module named 'vector_quantize_pytorch'")],
)
def test_a_loader_error_says_what_could_not_be_loaded(tmp_path, error):
    with pytest.raises(BackendError) as info:
        MiniCPM(model=str(tmp_path), device="cpu", load=Loader(error), transformers_version="4.51.3")
    assert str(info.value) == f"cannot load '{tmp_path}': {' '.join(str(error).split())}"


def test_out_of_gpu_memory_while_loading_suggests_int4(tmp_path):
    load = Loader(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(BackendError, match=re.escape(f"'{tmp_path}' does not fit in GPU memory; try --precision int4")):
        MiniCPM(model=str(tmp_path), device="cpu", load=load, transformers_version="4.51.3")


def test_a_model_path_that_does_not_exist(tmp_path):
    missing = tmp_path / "nope" / "MiniCPM-o-4_5"
    load = loader(OmniDouble())
    with pytest.raises(BackendError, match=re.escape(f"model path '{missing}' does not exist")):
        MiniCPM(model=str(missing), device="cpu", load=load, transformers_version="4.51.3")
    assert not load.calls


def test_an_uncached_hub_model_offline_says_how_to_get_it(tmp_path):
    code = (
        "from pipeline.backends.minicpm import MiniCPM\n"
        "from pipeline.errors import BackendError\n"
        "def load(*args):\n"
        "    raise AssertionError('loaded')\n"
        "try:\n"
        "    MiniCPM('openbmb/MiniCPM-V-4_5', device='cpu', load=load, transformers_version='4.51.3')\n"
        "except BackendError as exc:\n"
        "    print(exc)\n"
    )
    assert run_offline(code, tmp_path) == (
        "model 'openbmb/MiniCPM-V-4_5' is not in the local Hugging Face cache and the hub cannot be reached; "
        "download it on a connected machine with `huggingface-cli download openbmb/MiniCPM-V-4_5` "
        "(or copy it) and pass its local path with --model"
    )


# --- chunks and text ---


@pytest.mark.parametrize(
    ("chunk", "text", "audio"),
    [
        (("A goal", False), "A goal", None),  # o-4.5 text: (delta, is_finished)
        (("", True), "", None),
        ((torch.full((1, 3), 0.5), "Goal"), "Goal", [0.5, 0.5, 0.5]),  # o-4.5 audio: (waveform [1, n], delta)
        ((torch.full((1, 2), -0.25, dtype=torch.bfloat16), None), "", [-0.25, -0.25]),
        ((torch.zeros(1, 0), "x"), "x", None),  # an empty waveform is no audio
        ({"text": "hi", "hidden_states": object()}, "hi", None),  # o-2.6 text dict
        ({"text": "hey", "audio_wav": torch.ones(4)}, "hey", [1.0] * 4),
        (type("OmniOutput", (), {"text": "yo", "audio_wav": torch.ones(2)})(), "yo", [1.0, 1.0]),  # o-2.6 audio
        (type("Bare", (), {})(), "", None),
    ],
)
def test_parse_chunk(chunk, text, audio):
    got_text, got_audio = parse_chunk(chunk)
    assert got_text == text
    if audio is None:
        assert got_audio is None
    else:
        assert got_audio is not None and got_audio.dtype == np.float32 and got_audio.tolist() == audio


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Goal!<|tts_eos|>", "Goal!"),
        ("<|im_end|>", ""),
        ("<think>\n\n</think>\n\nHello", "\n\n\n\nHello"),
        ("a <|tts_bos|>b<|endoftext|>", "a b"),
        ("x < y | z > w", "x < y | z > w"),
    ],
)
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


# --- lifecycle ---


def test_close_is_idempotent_and_stream_after_close_fails(build):
    backend = build(OmniDouble())
    assert backend.description == f"minicpm · {backend.path.name} (bf16, sdpa, incremental prefill, own voice) on cpu"
    backend.close()
    backend.close()
    with pytest.raises(BackendError, match="the MiniCPM backend was closed"):
        list(backend.stream(request()))


def test_compile_warms_up_on_a_black_frame_and_forgets_it(build):
    double = OmniDouble()
    backend = build(double, compile_model=True)
    (warm,) = double.named("streaming_generate")
    assert warm["max_new_tokens"] == 4
    assert [p["images"] for p in double.prefills if p["images"]] == [[0]]
    assert backend.warmup_s > 0 and backend.ledger.owner is None
    list(backend.stream(request()))
    assert len(double.named("reset_session")) == 2  # the first real comment does not build on the warm-up


def test_a_profiles_voice_clip_sets_the_models_voice(build, tmp_path):
    import wave

    clip = tmp_path / "voice.wav"
    with wave.open(str(clip), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(48_000)
        out.writeframes((np.full((48_000, 2), 8192, np.int16)).tobytes())  # 1 s, stereo, 48 kHz
    double = OmniDouble(replies=["One.", "Two.", "Three."])
    backend = build(double)
    with_clip = request(on_audio=lambda speech: None)
    with_clip.reference_audio = str(clip)
    list(backend.stream(with_clip))
    list(backend.stream(request(range(3, 4), on_audio=lambda speech: None)))  # a profile without a clip
    inits = double.named("init_token2wav_cache")
    assert [c["prompt_speech_16k"] is None for c in inits] == [True, False, True]
    given = inits[1]["prompt_speech_16k"]
    assert len(given) == 16_000 and abs(float(given.mean()) - 0.25) < 0.01  # mono, 16 kHz, same level


def test_a_voice_clip_that_is_not_a_wav_is_a_clear_error(build, tmp_path):
    bad = tmp_path / "voice.wav"
    bad.write_text("not audio")
    backend = build(OmniDouble())
    with_clip = request(on_audio=lambda speech: None)
    with_clip.reference_audio = str(bad)
    with pytest.raises(BackendError, match="is not a readable WAV file"):
        list(backend.stream(with_clip))


def test_a_voice_that_could_not_start_is_named_in_the_speech_choice(build):
    from pipeline.config import load_settings
    from pipeline.speech.choice import choose_speech

    double = OmniDouble(tts_error=RuntimeError("no token2wav assets"))
    backend = build(double)
    chosen = choose_speech(load_settings(tts="auto"), backend)
    assert chosen.default == "espeak"
    assert "no token2wav assets" in chosen.unavailable["model"]
