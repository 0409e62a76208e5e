"""Incremental prefill in the transformers backend: a kept KV cache gives the tokens a full re-prefill gives.

Each tiny model (Qwen2-VL with M-RoPE, LLaVA, Idefics3 with split images) runs one script of comments through
two backends, one keeping its cache and one re-prefilling the window (``incremental=False``): the window grows,
slides, repeats, is cut, and two sessions take turns. Random weights give garbage text, so the checks are on
token ids and logits, and on how many images went through the vision tower.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from pipeline.backends import transformers_vlm
from pipeline.backends.base import CommentRequest
from pipeline.backends.transformers_vlm import INCREMENTAL_TYPES, TransformersVLM
from pipeline.config import Settings
from pipeline.frames import Frame
from pipeline.prompts import PromptParts
from tests.helpers.tiny_models import tiny_model_dir

KINDS = ["qwen2vl", "llava", "idefics3"]
LOGIT_TOLERANCE = 1e-4
SYSTEM = "You are a sports commentator."


def pool(source: str, count: int = 8, size: tuple[int, int] = (64, 48)) -> list[Frame]:
    """Distinct random frames of one source, half a second apart."""
    rng = np.random.default_rng([ord(c) for c in source])
    w, h = size
    return [
        Frame(
            rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
            media_time=i * 0.5,
            wall_time=100.0 + i,
            index=i,
            source_id=source,
        )
        for i in range(count)
    ]


A, B = pool("a"), pool("b")


@dataclass(frozen=True)
class Step:
    """One comment of the script, and how many images the kept cache must send through the vision tower."""

    stream: str
    trigger: str
    frames: list[Frame]
    new_images: int


SCRIPT = [
    Step("a", "start", A[:1], 1),
    Step("a", "active", A[:2], 1),  # the window grows: only the new frame
    Step("a", "active", A[:4], 2),
    Step("a", "active", A[:4], 0),  # the same window again: nothing to prefill
    Step("a", "active", A[1:5], 4),  # the oldest frame left: start over
    Step("a", "active", A[1:6], 1),
    Step("a", "scene_cut", A[5:6], 1),  # a cut starts over even on a frame the cache holds
    Step("b", "active", B[:2], 2),  # another session's turn
    Step("a", "active", A[5:7], 2),  # and back: the cache is B's now
    Step("b", "active", B[:3], 3),
    Step("b", "active", B[:4], 1),
]


def request(step: Step) -> CommentRequest:
    prompt = PromptParts(system=SYSTEM, user=f"These {len(step.frames)} frames are live. Comment on them now.")
    return CommentRequest(
        frames=step.frames, prompt=prompt, max_tokens=6, temperature=0.0, trigger=step.trigger, stream_id=step.stream
    )


class Recorder:
    """Keeps each generation's new token ids and logits, and counts images through the vision tower."""

    def __init__(self, backend: TransformersVLM, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tokens: list[list[int]] = []
        self.logits: list[torch.Tensor] = []
        self.images: list[int] = []  # per comment
        model = backend._model
        original = model.generate

        def generate(**kwargs):
            out = original(**kwargs, output_logits=True, return_dict_in_generate=True)
            self.tokens.append(out.sequences[0, kwargs["input_ids"].shape[1] :].tolist())
            self.logits.append(torch.stack(out.logits)[:, 0])
            return out

        monkeypatch.setattr(model, "generate", generate)
        self.tower, self.per_frame = vision_tower(backend)
        self.backend = backend

    def __enter__(self) -> Recorder:
        self._handle = self.tower.register_forward_hook(self._count, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()

    def _count(self, module, args, kwargs, output) -> None:
        if "grid_thw" in kwargs:  # Qwen2-VL: one grid row per image
            self.images[-1] += kwargs["grid_thw"].shape[0]
        else:  # CLIP takes images, Idefics3 its tiles
            self.images[-1] += (args[0] if args else kwargs["pixel_values"]).shape[0] // self.per_frame

    def comment(self, step: Step) -> str:
        self.images.append(0)
        return "".join(self.backend.stream(request(step)))


def vision_tower(backend: TransformersVLM) -> tuple[torch.nn.Module, int]:
    """The module that encodes images, and how many inputs it gets per frame (Idefics3 splits a frame in tiles)."""
    model = backend._model
    if backend._type == "qwen2_vl":
        return model.visual, 1
    if backend._type == "idefics3":
        tiles = backend._processor.image_processor([[np.zeros((48, 64, 3), np.uint8)]], return_tensors="pt")
        return model.model.vision_model, tiles["pixel_values"].shape[1]
    return model.vision_tower, 1


def load(kind: str, incremental: bool = True) -> TransformersVLM:
    settings = Settings(model=str(tiny_model_dir(kind)), device="cpu", incremental_prefill=incremental)
    return TransformersVLM.from_settings(settings)


@pytest.fixture(scope="module", params=KINDS)
def pair(request) -> Iterator[tuple[TransformersVLM, TransformersVLM]]:
    """The same tiny model twice: keeping its cache, and re-prefilling every window."""
    kept, full = load(request.param), load(request.param, incremental=False)
    yield kept, full
    kept.close()
    full.close()


def run_script(
    pair: tuple[TransformersVLM, TransformersVLM], monkeypatch: pytest.MonkeyPatch, script: list[Step] = SCRIPT
) -> tuple[Recorder, Recorder]:
    kept, full = pair
    with Recorder(kept, monkeypatch) as a, Recorder(full, monkeypatch) as b:
        for step in script:
            assert a.comment(step) == b.comment(step)
    return a, b


def test_kept_cache_gives_the_tokens_and_logits_of_a_full_prefill(pair, monkeypatch):
    kept, full = run_script(pair, monkeypatch)
    assert kept.tokens == full.tokens
    assert all(len(t) == 6 for t in kept.tokens)
    for a, b in zip(kept.logits, full.logits, strict=True):
        assert (a - b).abs().max() <= LOGIT_TOLERANCE
    # The comparison can tell windows apart: another window moves the logits far beyond the tolerance.
    assert (full.logits[1][0] - full.logits[2][0]).abs().max() > 100 * LOGIT_TOLERANCE


def test_each_frame_is_prefilled_once_and_a_full_prefill_takes_the_whole_window(pair, monkeypatch):
    kept, full = run_script(pair, monkeypatch)
    assert kept.images == [step.new_images for step in SCRIPT]
    assert full.images == [len(step.frames) for step in SCRIPT]


def test_the_cache_holds_exactly_the_frames_of_the_last_window(pair, monkeypatch):
    kept, _ = pair
    run_script(pair, monkeypatch, SCRIPT[:3])
    window = kept._window
    assert window is not None and window.owner == "a" and len(window.keys) == len(SCRIPT[2].frames)
    assert window.cache.get_seq_length() == window.ids.shape[1]
    image_token = kept._model.config.image_token_id if kept._type == "qwen2_vl" else kept._image_token_id
    expected = kept._process(kept._chat_text(request(SCRIPT[2])), SCRIPT[2].frames)["input_ids"][0].tolist()
    held = window.ids[0].tolist()
    assert expected[: len(held)] == held  # prefix + frames of a full prefill, up to the last image token ...
    assert held[-1] in (image_token, kept._tokenizer.convert_tokens_to_ids("<fake_token_around_image>"))
    assert image_token not in expected[len(held) :]  # ... and nothing of the frames after it


def test_sampling_on_a_kept_cache_streams(pair):
    kept, _ = pair
    step = Step("c", "active", A[:2], 0)
    req = request(step)
    req.temperature = 0.9
    assert list(kept.stream(req))
    assert kept._window is not None and kept._window.owner == "c"


def test_a_failed_generation_forgets_the_cache(pair, monkeypatch):
    kept, _ = pair
    list(kept.stream(request(SCRIPT[0])))
    assert kept._window is not None

    def explode(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(kept._model, "generate", explode)
    with pytest.raises(Exception, match="boom"):
        list(kept.stream(request(SCRIPT[1])))
    assert kept._window is None


@pytest.mark.parametrize("kind", KINDS)
def test_description_says_incremental_prefill(kind):
    backend = load(kind)
    try:
        assert backend.description.endswith("(float32, incremental prefill)")
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("incremental", "checked", "why"),
    [
        (False, INCREMENTAL_TYPES, "full prefill: --no-incremental-prefill"),
        (
            True,
            {"qwen2_vl": "Qwen2-VL", "idefics3": "Idefics3"},
            "full prefill: only Qwen2-VL, Idefics3 are checked to prefill frames one at a time exactly, not llava",
        ),
    ],
    ids=["setting", "unchecked-model-type"],
)
def test_full_prefill_is_taken_and_said_when_asked_for_or_unchecked(incremental, checked, why, monkeypatch):
    monkeypatch.setattr(transformers_vlm, "INCREMENTAL_TYPES", checked)
    backend = load("llava", incremental=incremental)
    try:
        assert backend.description.endswith(f"(float32, {why})")
        with Recorder(backend, monkeypatch) as rec:
            for step in SCRIPT[:3]:
                rec.comment(step)
        assert rec.images == [1, 2, 4] and backend._window is None
    finally:
        backend.close()


# LLaVA's template, but the frame count comes before the frames: the text before them changes as they arrive.
COUNTING_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% set parts = message['content'] %}"
    "{% if message['role'] == 'system' %}{{ parts[0]['text'] }}\n"
    "{% else %}USER ({{ parts | selectattr('type', 'equalto', 'image') | list | length }} frames): "
    "{% for part in parts %}{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}"
    "{{ part['text'] }}{% endif %}{% endfor %}\n{% endif %}{% endfor %}ASSISTANT:"
)


def test_template_that_is_not_prefix_stable_starts_over_every_comment_and_stays_exact(monkeypatch):
    kept, full = load("llava"), load("llava", incremental=False)
    try:
        for backend in (kept, full):
            monkeypatch.setattr(backend._processor, "chat_template", COUNTING_TEMPLATE)
        assert "USER (2 frames): <image>\n<image>\n" in kept._chat_text(request(SCRIPT[1]))
        a, b = run_script((kept, full), monkeypatch, SCRIPT[:4])
        assert a.tokens == b.tokens
        assert a.images == [1, 2, 4, 0]  # the text before the frames changed with each new one ...
        assert b.images == [1, 2, 4, 4]  # ... but the same window again builds on the cache
    finally:
        kept.close()
        full.close()


def test_frames_of_mixed_sizes_start_over(monkeypatch):
    kept, full = load("idefics3"), load("idefics3", incremental=False)
    wide = pool("w", 2, size=(96, 40))
    script = [
        Step("a", "start", A[:1], 1),
        Step("a", "active", [A[0], wide[0]], 2),
        Step("a", "active", [A[0], *wide], 3),
    ]
    try:
        a, b = run_script((kept, full), monkeypatch, script)
        assert a.tokens == b.tokens
        assert a.images == b.images  # both sent every window's tiles (counted in 64×48 frames) through the tower
    finally:
        kept.close()
        full.close()
