"""The MiniCPM backend where MiniCPM-o 4.5's real code cannot show it on this machine.

Everything o-4.5 can do on CPU is tested against its real code in ``tests/integration/test_minicpm_real.py``. What
stays here: MiniCPM-V 4.5 (its remote code is not available here, so ``tests/helpers/minicpm_double.VisionDouble``
stands in for it, written from the model card's signatures), precision and checkpoint choice (needs a GPU's
free memory), load errors that need a GPU or a broken download (a stand-in loader raises them), and the
adapter's pure functions.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.backends import minicpm, minicpm_checkpoints
from pipeline.backends.base import CommentRequest
from pipeline.backends.minicpm import THREAD_NAME, MiniCPM
from pipeline.backends.minicpm_checkpoints import (
    VARIANTS,
    check_transformers,
    choose_precision,
    missing_packages,
    variant_of,
)
from pipeline.backends.minicpm_text import Markup, TokenCap, decode_budget, parse_chunk
from pipeline.errors import BackendError
from pipeline.frames import Frame
from pipeline.prompts import PromptParts
from tests.helpers.minicpm_double import Loader, VisionDouble, loader
from tests.helpers.offline import run_offline

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "You are a sports commentator."
USER = "Comment on what is happening now."
O45, V45 = VARIANTS["openbmb/MiniCPM-o-4_5"], VARIANTS["openbmb/MiniCPM-V-4_5"]


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


def request(indices: range | list[int] = range(3), max_tokens: int = 20) -> CommentRequest:
    return CommentRequest(
        frames=[frame(i) for i in indices], prompt=PromptParts(SYSTEM, USER), max_tokens=max_tokens, temperature=0.0
    )


# --- MiniCPM-V 4.5 (its code is not available here: a double) ---


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


def test_explicit_int4_switches_to_the_int4_repository_and_asks_for_its_loader(build, monkeypatch):
    monkeypatch.setattr(minicpm_checkpoints.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(BackendError, match=re.escape("MiniCPM needs more packages here: run `pip install autoawq`")):
        build(VisionDouble(), model="openbmb/MiniCPM-o-4_5", precision="int4")


# --- load errors ---


def test_no_cuda_with_device_auto_says_it_needs_an_nvidia_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    load = loader(VisionDouble())
    with pytest.raises(BackendError, match=r"MiniCPM needs an NVIDIA GPU \(CUDA\), and torch sees none.*--device cpu"):
        MiniCPM(model=str(tmp_path), device="auto", load=load, transformers_version="4.51.3")
    assert not load.calls


def test_wrong_transformers_version_says_which_to_install(tmp_path):
    load = loader(VisionDouble())
    with pytest.raises(BackendError, match=re.escape("this is 4.57.0; run `pip install transformers==4.51.3`")):
        MiniCPM(model=str(tmp_path), device="cpu", load=load, transformers_version="4.57.0")
    assert not load.calls
    check_transformers("4.51.0")
    check_transformers("4.51.3")


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
    load = loader(VisionDouble())
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


def test_markup_drops_the_models_added_tokens_and_nothing_else():
    tokenizer = type("Tok", (), {"get_added_vocab": lambda self: {"<image>": 1, "</image>": 2, "<unit>": 3, "x": 4}})()
    markup = Markup(tokenizer)
    assert markup.remove("a <image>b</image> <unit>c<|im_end|><|tts_eos|>") == "a b c"
    assert markup.remove("x < y | z > w, <think></think>done") == "x < y | z > w, done"
    assert Markup(None).remove("Goal!<|tts_eos|>") == "Goal!"  # a model without a tokenizer: its specials still go


def test_decode_budget_never_passes_the_cap_in_chunks_of_ten():
    assert [decode_budget(n) for n in (1, 9, 10, 25, 40, 101)] == [10, 10, 10, 20, 40, 100]


def test_token_cap_cuts_at_the_limit():
    words = type("Words", (), {"encode": lambda self, t, **_: t.split(), "decode": lambda self, ids: " ".join(ids)})()
    cap = TokenCap(words, 3)
    assert cap.take("one two") == ("one two", False)
    assert cap.take(" three four five") == (" three", True)


# --- lifecycle ---


def test_close_is_idempotent_and_stream_after_close_fails(build):
    backend = build(VisionDouble())
    assert backend.description == f"minicpm · {backend.path.name} (float32, sdpa, chat, no voice) on cpu"
    backend.close()
    backend.close()
    with pytest.raises(BackendError, match="the MiniCPM backend was closed"):
        list(backend.stream(request()))


def test_compile_warms_up_on_a_black_frame_and_forgets_it(build):
    double = VisionDouble()
    backend = build(double, compile_model=True)
    (warm,) = double.named("chat")
    assert warm["max_new_tokens"] == 4 and [i.getpixel((0, 0))[0] for i in warm["msgs"][0]["content"][:-1]] == [0]
    assert backend.warmup_s > 0 and backend.ledger.owner is None


def test_a_voice_clip_is_read_as_mono_16_khz(tmp_path):
    import soundfile

    clip = tmp_path / "voice.flac"
    soundfile.write(str(clip), np.full((48_000, 2), 0.25, np.float32), 48_000)  # 1 s, stereo, 48 kHz
    given = MiniCPM._reference(str(clip))
    assert given.dtype == np.float32 and len(given) == 16_000 and abs(float(given.mean()) - 0.25) < 0.01


def test_a_voice_clip_that_is_not_audio_is_a_clear_error(tmp_path):
    bad = tmp_path / "voice.wav"
    bad.write_text("not audio")
    with pytest.raises(BackendError, match="is not a readable audio file"):
        MiniCPM._reference(str(bad))
