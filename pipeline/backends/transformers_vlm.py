"""Any Hugging Face image-text-to-text model through ``transformers`` (Qwen2-VL, LLaVA, Idefics3, ...).

Imported only when this backend is chosen, so torch is paid for only then. ``generate`` runs in a
worker thread (``pipeline.backends.worker``) whose streamer hands text to a queue the consumer polls
with a short timeout, so a worker that died, stalled or was cancelled never blocks the pipeline.

**Incremental prefill** (LLaVA, Qwen2-VL, Idefics3). A comment's chat text is the system text, one
image part per frame and the prompt. The model's KV cache is kept across comments and holds exactly
the tokens up to the newest frame's image; a comment prefills only the frames new to it (one forward
with their pixels, since ``generate()`` drops pixels on a non-empty cache), then ``generate()``
prefills the prompt and decodes on top, and the cache is cropped back to the frames. It is exact:
the cache always holds the same tokens, at the same positions, that a full prefill of the same window
builds, so the greedy tokens are those of a full re-prefill (up to float rounding). The cache is
kept only while the window *extends* what it holds: same session, no scene cut or start, the same
text before the first frame, and the cached frames still the window's first ones. When the oldest
frame leaves the window the cache starts over with a full prefill of the new window: with causal
attention every later key and value depends on the frame that left, and keeping it would show the
model frames the request (and its prompt, which counts and times them) does not have. So it saves
work while the window fills (after a start or cut) and while the window has not moved; a full
window that slides costs what a full prefill costs. The cache never holds more than one window,
so it needs no budget of its own. Every comment re-checks that the text and its tokens really
grow frame by frame (else the cache starts over) and frames of mixed sizes always start over
(Idefics3's processor pads a batch of images to its largest). Other model types, whose processors,
positions or templates have not been checked to stay exact frame by frame, prefill the whole
window every comment, as does ``--no-incremental-prefill``; ``description`` says which and why.
"""

from __future__ import annotations

import copy
import gc
import inspect
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from pipeline.backends.base import Backend, Capabilities, CommentRequest
from pipeline.backends.hf_loading import locate_model, pick_dtype, resolve_device
from pipeline.backends.prefill import FrameKey, frame_key, starts_over
from pipeline.backends.transformers_loading import load_vlm
from pipeline.backends.worker import stream_generation
from pipeline.errors import BackendError
from pipeline.frames import Frame

if TYPE_CHECKING:
    from pipeline.config import Settings

log = logging.getLogger(__name__)

THREAD_NAME = "onlooker-transformers-generate"
# Sampling knobs that only warn when greedy decoding meets a model's sampling defaults.
SAMPLING_KNOBS = ("temperature", "top_p", "top_k", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")
# Model types checked to prefill frames into a kept cache exactly (see the module docstring), with their names.
INCREMENTAL_TYPES = {"llava": "LLaVA", "qwen2_vl": "Qwen2-VL", "idefics3": "Idefics3"}
INCREMENTAL = "incremental prefill"


@dataclass
class _Window:
    """What the kept cache holds: the chat text up to the newest frame's image token, its token ids before
    the processor expanded the images and after (the cache's exact contents), the frames, and for
    Qwen2-VL their image grids (its M-RoPE positions depend on them)."""

    owner: str
    text: str
    text_ids: list[int]
    ids: torch.Tensor
    keys: list[FrameKey]
    grids: torch.Tensor | None
    cache: Any


def _image(frame: Frame) -> Image.Image:
    return Image.fromarray(frame.image).convert("RGB")


@contextmanager
def _last_logits_only(model: Any) -> Iterator[None]:
    """A frames-only prefill needs the cache, not logits: the LM head sees only the last position (logits of
    a real vocabulary for every image token cost as much as a layer)."""
    handle = model.get_output_embeddings().register_forward_pre_hook(lambda _module, args: (args[0][:, -1:],))
    try:
        yield
    finally:
        handle.remove()


def _idefics3_embeds(model: Any, input_ids: torch.Tensor, pixel_values: torch.Tensor, pixel_attention_mask: Any) -> Any:
    """Idefics3 merges image features only into an empty cache (``past_seen_tokens == 0``), so new frames go
    on top of a kept one as embeddings, merged here as its forward does."""
    inner = model.model
    pixels = pixel_values.flatten(0, 1).to(inner.dtype)
    mask = pixel_attention_mask.flatten(0, 1)
    real = (pixels == 0.0).sum(dim=(-1, -2, -3)) != pixels[0].numel()  # padding images are all zero
    pixels, mask = pixels[real], mask[real]
    patch = inner.config.vision_config.patch_size
    patches = mask.unfold(1, patch, patch).unfold(2, patch, patch).sum(dim=(-1, -2)) > 0
    features = inner.connector(inner.vision_model(pixel_values=pixels, patch_attention_mask=patches).last_hidden_state)
    embeds = inner.text_model.get_input_embeddings()(input_ids)
    return inner.inputs_merger(input_ids=input_ids, inputs_embeds=embeds, image_hidden_states=features)


class TransformersVLM(Backend):
    """A vision-language model run in-process by ``transformers``; one model shared by all sessions."""

    name = "transformers"
    keeps_stream_state = True  # the KV cache kept across comments is one stream's: the scheduler keeps a camera warm

    def __init__(
        self,
        model: str,
        device: str = "auto",
        token_timeout: float = 60.0,
        max_frames: int = 8,
        incremental: bool = True,
    ) -> None:
        if not model:
            raise BackendError("no model given: pass --model or set ONLOOKER_MODEL (a hub id or a local path)")
        self.model_id = model
        self.token_timeout = token_timeout
        self.capabilities = Capabilities(images=True, video=False, max_frames=max_frames)
        self._lock = threading.Lock()
        self.device = resolve_device(device)
        self.dtype = pick_dtype(self.device)
        self.path = locate_model(model)
        self._processor, self._model = load_vlm(model, self.path, self.dtype, self.device)
        self._tokenizer = self._processor.tokenizer
        # Some tokenizers emit token_type_ids that generate() rejects as unused unless forward() takes them.
        self._drop_token_type_ids = "token_type_ids" not in inspect.signature(self._model.forward).parameters
        self._type = self._model.config.model_type
        self.prefill = self._prefill_mode(incremental)
        token = getattr(self._processor, "image_token", None)
        self._image_token = str(getattr(token, "content", token) or "")  # Idefics3 keeps an AddedToken
        self._image_token_id = self._tokenizer.convert_tokens_to_ids(self._image_token) if self._image_token else None
        self._window: _Window | None = None  # the kept cache; only the generate thread (holding the lock) uses it
        self._noted: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> TransformersVLM:
        """Load ``settings.model`` on ``settings.device``; every failure is a one-line BackendError."""
        return cls(
            settings.model or "",
            device=settings.device,
            token_timeout=settings.token_timeout,
            incremental=settings.incremental_prefill,
        )

    def _prefill_mode(self, incremental: bool) -> str:
        """``incremental prefill``, or ``full prefill: <why>`` where a kept cache cannot be made exact."""
        if not incremental:
            return "full prefill: --no-incremental-prefill"
        if self._type not in INCREMENTAL_TYPES:
            checked = ", ".join(INCREMENTAL_TYPES.values())
            return f"full prefill: only {checked} are checked to prefill frames one at a time exactly, not {self._type}"
        return INCREMENTAL

    @property
    def description(self) -> str:
        """``transformers · <model> on <device> (<dtype>, <prefill mode>)`` for status lines."""
        name = self.path.name if Path(self.model_id).expanduser().is_dir() else self.model_id
        return f"transformers · {name} on {self.device} ({str(self.dtype).removeprefix('torch.')}, {self.prefill})"

    def _chat_text(self, request: CommentRequest) -> str:
        """The chat-templated prompt with one image part per frame."""
        user = [*({"type": "image"} for _ in request.frames), {"type": "text", "text": request.prompt.user}]
        messages = [
            {"role": "system", "content": [{"type": "text", "text": request.prompt.system}]},
            {"role": "user", "content": user},
        ]
        from jinja2 import TemplateError

        try:
            try:
                return self._processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            except TemplateError:
                # Some templates refuse a system turn: fold the system text into the user turn instead.
                merged = [*user[:-1], {"type": "text", "text": f"{request.prompt.system}\n\n{request.prompt.user}"}]
                return self._processor.apply_chat_template(
                    [{"role": "user", "content": merged}], add_generation_prompt=True, tokenize=False
                )
        except TemplateError as exc:
            raise BackendError(
                f"model '{self.model_id}' could not prepare {len(user) - 1} frame(s) and the prompt: {exc}"
            ) from None

    def _process(self, text: str, frames: list[Frame], **kwargs: Any) -> Any:
        """Run the processor on chat text (or a piece of it) and its frames, on the model's device."""
        images = [_image(f) for f in frames]
        try:
            inputs = self._processor(text=[text], images=images or None, return_tensors="pt", **kwargs)
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as exc:
            raise BackendError(
                f"model '{self.model_id}' could not prepare {len(images)} frame(s) and the prompt: {exc}"
            ) from None
        if self._drop_token_type_ids:
            inputs.pop("token_type_ids", None)
        return inputs.to(self.device, dtype=self.dtype)

    def _note(self, why: str) -> None:
        """Say once per reason that a comment could not use the kept cache."""
        if why not in self._noted:
            self._noted.add(why)
            log.warning("model '%s': %s", self.model_id, why)

    def _inputs(self, request: CommentRequest, text: str) -> Any:
        """``generate()`` inputs for a comment: on top of the kept cache, first prefilling the frames new to
        it, or (the cache starting over) a full prefill whose cache is kept. Runs holding the lock."""
        frames = request.frames
        ids = self._tokenizer(text)["input_ids"]  # before the processor expands images, special tokens as it adds
        marks = [i for i, token in enumerate(ids) if token == self._image_token_id]
        cuts = [m.end() for m in re.finditer(re.escape(self._image_token), text)]
        if not frames or len(marks) != len(frames) or len(cuts) != len(frames):
            if frames:
                self._note("the chat template does not put one image token per frame: full prefill for those")
            self._window = None
            return self._process(text, frames)
        held = self._held(request, text, ids, cuts)
        if (
            held
            and self._tokenizer(text[cuts[held - 1] : cuts[-1]], add_special_tokens=False)["input_ids"]
            != (ids[marks[held - 1] + 1 : marks[-1] + 1])
        ):
            self._note("new frames' text tokenizes differently on its own, so the cache starts over every comment")
            held = 0
        if not held:
            return self._restart(request, text, ids[: marks[-1] + 1], ids[marks[-1] + 1 :], cuts[-1])
        return self._extend(request, text, ids, marks[-1] + 1, cuts[-1])

    def _held(self, request: CommentRequest, text: str, ids: list[int], cuts: list[int]) -> int:
        """How many of the window's first frames the kept cache holds and can build on (0: start over)."""
        window, frames = self._window, request.frames
        if window is None or starts_over(request.stream_id, window.owner, request.trigger):
            return 0
        held = len(window.keys)
        if len({f.size for f in frames}) > 1 or [frame_key(f) for f in frames[:held]] != window.keys:
            return 0
        if cuts[held - 1] != len(window.text) or not text.startswith(window.text):
            return 0
        return held if ids[: len(window.text_ids)] == window.text_ids else 0

    def _restart(self, request: CommentRequest, text: str, held_ids: list[int], tail: list[int], cut: int) -> Any:
        """A full prefill of the window whose cache, cropped after the comment to the frames, is kept."""
        inputs = self._process(text, request.frames)
        ids = inputs["input_ids"]
        end = ids.shape[1] - len(tail)
        if ids[0, end:].tolist() != tail:  # the processor changed the text after the last image: keep nothing
            self._note("the processor rewrites the prompt after the frames: full prefill for those")
            self._window = None
            return inputs
        from transformers import DynamicCache

        keys = [frame_key(f) for f in request.frames]
        grids = inputs.get("image_grid_thw")
        self._window = _Window(request.stream_id, text[:cut], held_ids, ids[:, :end], keys, grids, DynamicCache())
        return {**inputs, "past_key_values": self._window.cache}

    def _extend(self, request: CommentRequest, text: str, ids: list[int], mark: int, cut: int) -> Any:
        """Prefill the frames the kept cache lacks, then ``generate()`` inputs with the prompt on top of it."""
        window = self._window
        assert window is not None
        new = request.frames[len(window.keys) :]
        pixels: dict[str, Any] = {}
        new_ids = window.ids[:, :0]
        if new:
            pixels = dict(self._process(text[len(window.text) : cut], new, add_special_tokens=False))
            new_ids = pixels.pop("input_ids")
            pixels.pop("attention_mask", None)
        start = window.ids.shape[1]
        window.ids = torch.cat([window.ids, new_ids], dim=1)
        if "image_grid_thw" in pixels:
            window.grids = torch.cat([window.grids, pixels["image_grid_thw"]])
        full = torch.cat([window.ids, torch.tensor([ids[mark:]], dtype=window.ids.dtype, device=self.device)], dim=1)
        positions = self._mrope(full, window.grids) if self._type == "qwen2_vl" else None
        if new:
            self._prefill_frames(window.cache, new_ids, pixels, start, positions)
        window.text, window.text_ids, window.keys = text[:cut], ids[:mark], [frame_key(f) for f in request.frames]
        return {"input_ids": full, "attention_mask": torch.ones_like(full), "past_key_values": window.cache}

    def _mrope(self, ids: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
        """Qwen2-VL's M-RoPE positions for the whole sequence; its ``rope_deltas`` are what ``generate()``
        places the prompt and the comment by on a non-empty cache (text after the last image is linear)."""
        positions, deltas = self._model.get_rope_index(ids, grids, None, torch.ones_like(ids))
        self._model.rope_deltas = deltas
        return positions

    def _prefill_frames(
        self, cache: Any, ids: torch.Tensor, pixels: dict[str, Any], start: int, positions: torch.Tensor | None
    ) -> None:
        """One forward of the new frames' tokens with their pixels on top of the cache."""
        end = start + ids.shape[1]
        kwargs: dict[str, Any] = {
            "past_key_values": cache,
            "use_cache": True,
            "cache_position": torch.arange(start, end, device=ids.device),
        }
        if positions is not None:
            kwargs["position_ids"] = positions[:, :, start:end]
        if self._type == "idefics3":
            kwargs["inputs_embeds"] = _idefics3_embeds(self._model, ids, **pixels)
        else:
            kwargs.update(input_ids=ids, **pixels)
        with _last_logits_only(self._model):
            self._model(**kwargs)

    def _generation_config(self, request: CommentRequest) -> Any:
        from transformers import GenerationConfig

        config = copy.deepcopy(self._model.generation_config)
        config.max_new_tokens = request.max_tokens
        config.do_sample = request.temperature > 0
        if config.do_sample:
            config.temperature = request.temperature
        else:
            defaults = GenerationConfig()
            for knob in SAMPLING_KNOBS:
                setattr(config, knob, getattr(defaults, knob))
        if config.eos_token_id is None:
            config.eos_token_id = self._tokenizer.eos_token_id
        if config.pad_token_id is None:
            pad = self._tokenizer.pad_token_id
            eos = config.eos_token_id
            config.pad_token_id = pad if pad is not None else (eos[0] if isinstance(eos, list) else eos)
        return config

    def stream(self, request: CommentRequest) -> Iterator[str]:
        """Yield text deltas as the worker thread generates them; stop on cancel, failure or a stall."""
        from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

        model = self._model
        if model is None:
            raise BackendError("the transformers backend was closed")
        if request.cancel.is_set():
            return
        request.timings["model_start"] = time.perf_counter()
        text = self._chat_text(request)
        incremental = self.prefill == INCREMENTAL
        prepared = None if incremental else self._process(text, request.frames)
        config = self._generation_config(request)
        tokenizer = self._tokenizer

        def produce(emit: Callable[[str], None], should_stop: Callable[[], bool]) -> None:
            class _Emit(TextStreamer):
                def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                    if text:
                        emit(text)

            class _Cancel(StoppingCriteria):
                def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
                    halt = should_stop()
                    return torch.full((input_ids.shape[0],), halt, dtype=torch.bool, device=input_ids.device)

            streamer = _Emit(tokenizer, skip_prompt=True, skip_special_tokens=True)
            with torch.inference_mode():
                try:
                    inputs = self._inputs(request, text) if incremental else prepared
                    model.generate(
                        **inputs,
                        generation_config=config,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_Cancel()]),
                    )
                except BaseException:
                    self._window = None  # a turn that broke off leaves the cache in an unknown state
                    raise
                if self._window is not None:
                    self._window.cache.crop(self._window.ids.shape[1])  # drop the prompt and the comment

        for text in stream_generation(
            produce,
            lock=self._lock,
            cancel=request.cancel,
            token_timeout=self.token_timeout,
            what=f"model '{self.model_id}'",
            thread_name=THREAD_NAME,
        ):
            request.timings.setdefault("model_first_token", time.perf_counter())
            yield text

    def close(self) -> None:
        """Drop the model and return its memory (GPU memory included). Safe to call twice."""
        acquired = self._lock.acquire(timeout=self.token_timeout)
        try:
            if getattr(self, "_model", None) is None:
                return
            self._model = None
            self._processor = None
            self._window = None
        finally:
            if acquired:
                self._lock.release()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
