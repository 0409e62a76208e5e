"""MiniCPM-o 4.5 (vision + speech, its own voice) and MiniCPM-V 4.5 (vision only), in process.

The models run their own code (``trust_remote_code``); the calls used here follow OpenBMB's model
cards and modeling code as read in ``docs/minicpm-api.md``:

* **MiniCPM-o**: the streaming session API. Each frame is prefilled once, as an image, into a
  session that keeps its KV cache (``streaming_prefill``); a comment prefills only the frames that
  arrived since the last one plus the prompt, then decodes (``streaming_generate``), so its cost does
  not grow with the window. The session is reset at scene cuts, when another Onlooker session uses
  the model, and before the context passes ``CONTEXT_BUDGET`` tokens (the prompt carries the recent
  comments, the short summary of what was said); the ledger reads the real KV-cache length.
  Loaded without its audio encoder (``--vision-only``), the published code cannot prefill a system
  turn (it reads ``self.apm`` first), so the system prompt opens the first user turn instead.
  ``--no-incremental-prefill`` is the card's way, the baseline: ``chat()`` with the whole window for
  every comment (not streamed: ``chat(stream=True)`` fails in the published code after starting its
  generate thread; and greedy with ``num_beams=1``, the code defaults to 3 beams). Without the audio
  encoder ``chat()`` cannot run either, so that baseline starts the streaming session over instead.
* **MiniCPM-V**: ``chat(stream=True)`` with the window's frames as images (``use_image_id=False``,
  ``max_slice_nums`` from settings, ``temporal_ids`` in groups of ``FRAMES_PER_GROUP``).

Everything runs in one worker thread at a time (``pipeline.backends.worker``): the session state
lives on the model object, so sessions take turns.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from pipeline.backends.base import Backend, Capabilities, CommentRequest
from pipeline.backends.hf_loading import locate_model, pick_attention, resolve_device
from pipeline.backends.minicpm_checkpoints import (
    check_transformers,
    choose_precision,
    missing_packages,
    variant_of,
)
from pipeline.backends.minicpm_text import (
    Markup,
    TokenCap,
    decode_budget,
    kv_length,
    parse_chunk,
    said_nothing,
    text_tokens,
    to_speech,
)
from pipeline.backends.minicpm_voice import VOICE_PIP, default_voice, read_reference, voice_unavailable
from pipeline.backends.prefill import PrefillLedger
from pipeline.backends.remote_code import load_remote_model, quiet_transformers
from pipeline.backends.worker import stream_generation
from pipeline.errors import BackendError
from pipeline.frames import Frame
from pipeline.prompts import PromptParts

if TYPE_CHECKING:
    from pipeline.config import Settings

log = logging.getLogger(__name__)
# o-4.5's chat() always passes its sampling settings (top_p, top_k, temperature), so every greedy call
# (the ASR hook, the chat baseline) would print transformers' "`do_sample` is set to `False`" notice.
warnings.filterwarnings("ignore", message="`do_sample` is set to `False`", category=UserWarning)

THREAD_NAME = "onlooker-minicpm-generate"
DEFAULT_MODEL = "openbmb/MiniCPM-o-4_5"
TURN_TOKENS = 6  # what opens a new user turn after a reply: <|tts_eos|><|im_end|>\n<|im_start|>user\n
FRAMES_PER_GROUP = 3  # MiniCPM-V 4.5 packs frames into 3D-resampler groups; the card packs 3
ASR_PROMPT = "Please listen to the audio snippet carefully and transcribe the content.\n"


class MiniCPM(Backend):
    """One MiniCPM model shared by all sessions (they take turns)."""

    name = "minicpm"
    keeps_stream_state = True  # one streaming session (KV cache) per model: the scheduler keeps a camera warm

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: str = "auto",
        precision: str = "auto",
        vision_only: bool = False,
        attn: str = "auto",
        compile_model: bool = False,
        max_slice_nums: int = 1,
        incremental: bool = True,
        token_timeout: float = 60.0,
        reference_audio: str | None = None,
        load: Callable[[Path, torch.dtype, str, bool, torch.device], Any] = load_remote_model,
        transformers_version: str | None = None,
    ) -> None:
        import transformers

        check_transformers(transformers_version or transformers.__version__)
        if device == "auto" and not torch.cuda.is_available():
            raise BackendError(
                "MiniCPM needs an NVIDIA GPU (CUDA), and torch sees none; use --backend openai with a server "
                "that has one, --backend transformers with a small model, or pass --device cpu to try it slowly"
            )
        self.device = resolve_device(device)
        self.token_timeout = token_timeout
        self.max_slice_nums = max_slice_nums
        self.variant = variant_of(model)
        free = torch.cuda.mem_get_info(self.device)[0] / 2**30 if self.device.type == "cuda" else None
        self.precision, self.precision_reason = choose_precision(precision, free, self.variant)
        self.model_id = self.variant.int4 if self.precision == "int4" and self.variant else model
        needed = {self.variant.int4_package: self.variant.int4_pip} if self.precision == "int4" and self.variant else {}
        if missing := missing_packages(needed):
            quoted = " ".join(f'"{pip}"' if set(pip) & set("[]<>=!~") else pip for pip in missing)  # shell-safe
            raise BackendError(f"MiniCPM needs more packages here: run `pip install {quoted}`")
        self.path = locate_model(self.model_id, allow_patterns=None)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.attn = pick_attention(attn) if self.device.type == "cuda" else "sdpa"
        try:
            self._model = load(self.path, dtype, self.attn, vision_only, self.device)
        except torch.cuda.OutOfMemoryError:
            raise BackendError(f"'{self.model_id}' does not fit in GPU memory; try --precision int4") from None
        except (OSError, ValueError, RuntimeError, ImportError, AttributeError) as exc:
            raise BackendError(f"cannot load '{self.model_id}': {' '.join(str(exc).split())[:300]}") from None
        self._lock = threading.Lock()
        self._voice_ref: str | None = None
        self.ledger = PrefillLedger()
        self.incremental = incremental
        self.hears = hasattr(self._model, "apm")  # o-4.5 loaded with its audio encoder
        self.streaming = callable(getattr(self._model, "streaming_prefill", None))
        # o-4.5's chat() is the baseline and needs the audio encoder; MiniCPM-V has nothing else
        self.uses_chat = not self.streaming or (not incremental and self.hears)
        if self.streaming and getattr(self._model, "processor", None) is None:
            with quiet_transformers():
                self._model.init_streaming_processor()  # o-4.5 makes it on first use; its tokenizer is needed now
        processor = getattr(self._model, "processor", None)
        self.markup = Markup(getattr(processor, "tokenizer", None) or getattr(self._model, "tokenizer", None))
        speechless = vision_only or (self.variant is not None and self.variant.family == "v") or not self.streaming
        self.voice_error = voice_unavailable(self._model, speechless, self.uses_chat)
        if not self.voice_error:
            self._init_voice(reference_audio)
        if self.hears:
            self.transcribe = self._transcribe  # the voice-instruction hook (pipeline.speech.transcribe)
        self.capabilities = Capabilities(
            images=True,
            video=self.variant is not None and self.variant.family == "v",
            audio_out=not self.voice_error,
            max_frames=16,
        )
        self.warmup_s = self._compile() if compile_model else 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> MiniCPM:
        return cls(
            settings.model or DEFAULT_MODEL,
            device=settings.device,
            precision=settings.precision,
            vision_only=settings.vision_only,
            attn=settings.attn,
            compile_model=settings.compile,
            max_slice_nums=settings.max_slice_nums,
            incremental=settings.incremental_prefill,
            token_timeout=settings.token_timeout,
        )

    def _init_voice(self, reference_audio: str | None) -> None:
        """The model's streaming voice; when it cannot start, text goes on and ``voice_error`` says why."""
        try:
            with quiet_transformers():
                self._model.init_tts(streaming=True)
            self._set_reference(reference_audio)
        except ImportError as exc:  # the vocoder package: `pip install minicpmo-utils[all]`
            self.voice_error = f'the model\'s voice needs its vocoder: `pip install "{VOICE_PIP}"`; using espeak-ng'
            log.debug("voice import failed: %s", exc)
        except Exception as exc:  # remote code: any failure means "no voice", never "no commentary"
            self.voice_error = f"the model's voice could not start ({type(exc).__name__}: {exc}); using espeak-ng"
        if self.voice_error:
            log.warning("%s", self.voice_error)

    def _set_reference(self, reference_audio: str | None) -> None:
        """Voice the model speaks with: a profile's reference clip, or one the checkpoint ships."""
        clip = reference_audio or default_voice(self.path)
        self._model.init_token2wav_cache(prompt_speech_16k=self._reference(clip))
        self._voice_ref = reference_audio

    _reference = staticmethod(read_reference)  # a voice clip as the model's voice cloning takes it

    def _compile(self) -> float:
        """torch.compile the language model, then warm it up with a 4-token comment on a black frame
        so the first real comment does not pay the compilation; returns the seconds it took."""
        started = time.perf_counter()
        llm = getattr(self._model, "llm", None)
        if llm is not None:
            self._model.llm = torch.compile(llm)
        black = Frame(np.zeros((448, 448, 3), np.uint8), media_time=0.0, wall_time=time.time(), index=0, source_id="")
        warm = CommentRequest(
            frames=[black], prompt=PromptParts("You describe images.", "Describe this."), max_tokens=4, temperature=0
        )
        for _ in self.stream(warm):
            pass
        self.ledger.forget()
        return time.perf_counter() - started

    @property
    def description(self) -> str:
        name = self.path.name if Path(self.model_id).expanduser().is_dir() else self.model_id
        mode = "chat" if self.uses_chat else ("incremental prefill" if self.incremental else "full prefill")
        voice = "own voice" if self.capabilities.audio_out else "no voice"
        warm = f", compiled in {self.warmup_s:.0f} s" if self.warmup_s else ""
        precision = self.precision if self.device.type == "cuda" else "float32"
        return f"minicpm · {name} ({precision}, {self.attn}, {mode}, {voice}{warm}) on {self.device}"

    # --- commentary ---
    def stream(self, request: CommentRequest) -> Iterator[str]:
        """Text deltas; the model's own audio goes to ``request.on_audio`` as it is generated."""
        model = self._model
        if model is None:
            raise BackendError("the MiniCPM backend was closed")
        if request.cancel.is_set():
            return
        request.timings["model_start"] = time.perf_counter()
        produce = self._produce_chat(model, request) if self.uses_chat else self._produce_streaming(model, request)
        for kind, value in stream_generation(
            produce,
            lock=self._lock,
            cancel=request.cancel,
            token_timeout=self.token_timeout,
            what=f"model '{self.model_id}'",
            thread_name=THREAD_NAME,
        ):
            if kind == "audio" and request.on_audio is not None:
                request.on_audio(to_speech(value))
            elif kind == "text" and value:
                request.timings.setdefault("model_first_token", time.perf_counter())
                yield value

    def _produce_streaming(self, model: Any, request: CommentRequest) -> Callable[..., None]:
        voice = request.on_audio is not None and self.capabilities.audio_out

        def produce(emit: Callable[[Any], None], should_stop: Callable[[], bool]) -> None:
            finished = False
            try:
                if voice and request.reference_audio != self._voice_ref:
                    self._set_reference(request.reference_audio)  # the profile (or its voice clip) changed
                self._prefill(model, request)
                cap = TokenCap(model.processor.tokenizer, request.max_tokens)
                generator = model.streaming_generate(
                    session_id=request.stream_id,
                    generate_audio=voice,
                    max_new_tokens=decode_budget(request.max_tokens),
                    do_sample=request.temperature > 0,
                    temperature=max(request.temperature, 0.01),
                    use_tts_template=voice,
                )
                try:
                    for chunk in generator:
                        if should_stop():
                            return
                        text, audio = parse_chunk(chunk)
                        if audio is not None:
                            emit(("audio", audio))
                        text, full = cap.take(self.markup.remove(text))
                        if text:
                            emit(("text", text))
                        if full:  # a reply cut short stays in the cache; the next turn closes it
                            break
                    finished = True
                except ValueError as exc:
                    if cap.text or not said_nothing(exc):
                        raise
                    log.debug("the model ended its reply at once: an empty comment")  # the session starts over
                finally:
                    generator.close()
            finally:
                if not finished:
                    self.ledger.forget()  # a half-generated turn sits in the cache: start clean next time

        return produce

    def _prefill(self, model: Any, request: CommentRequest) -> None:
        """Bring the model's session up to date: new frames once each, then the prompt."""
        ledger = self.ledger
        ledger.synced(kv_length(model))  # the last reply, and o-4.5's own window, changed it
        system, user = self.markup.remove(request.prompt.system), self.markup.remove(request.prompt.user)
        prompt_tokens = text_tokens(model, user) + TURN_TOKENS
        reset, new = ledger.plan(request.stream_id, request.frames, request.trigger, prompt_tokens + request.max_tokens)
        if reset or not self.incremental:
            new = request.frames
            model.reset_session(reset_token2wav_cache=False)  # True would drop the voice set at start
            self._prefill_system(model, request.stream_id, system)
            ledger.started(request.stream_id, kv_length(model) or text_tokens(model, system))
        ledger.expected = ledger.tokens + len(new) * ledger.frame_tokens + prompt_tokens
        before = kv_length(model)
        for frame in new:
            model.streaming_prefill(
                session_id=request.stream_id,
                msgs=[{"role": "user", "content": [_image(frame)]}],
                max_slice_nums=self.max_slice_nums,
            )
        after = kv_length(model)
        ledger.added(
            new, after - before if after is not None and before is not None else len(new) * ledger.frame_tokens
        )
        if user.strip():  # an empty text part would reach the model as a zero-length input and fail
            model.streaming_prefill(session_id=request.stream_id, msgs=[{"role": "user", "content": [user]}])
        ledger.synced(kv_length(model))

    def _prefill_system(self, model: Any, stream_id: str, system: str) -> None:
        """The system turn; without the audio encoder the published code cannot prefill one (it reads
        ``self.apm`` on that path), so the instructions open the first user turn instead."""
        if not system.strip():
            return
        role, text = ("system", system) if self.hears else ("user", system + "\n\n")
        model.streaming_prefill(session_id=stream_id, msgs=[{"role": role, "content": [text]}])

    def _produce_chat(self, model: Any, request: CommentRequest) -> Callable[..., None]:
        """The whole window through ``chat()``: MiniCPM-V streams it; o-4.5 cannot (see the module doc)."""
        images = [_image(f) for f in request.frames]
        system, user = self.markup.remove(request.prompt.system), self.markup.remove(request.prompt.user)
        kwargs: dict[str, Any] = {
            "do_sample": request.temperature > 0,
            "temperature": max(request.temperature, 0.01),
            "max_new_tokens": request.max_tokens,
            "use_image_id": False,
            "max_slice_nums": self.max_slice_nums,
            "num_beams": 1,
        }
        if self.streaming:  # o-4.5: one reply, no voice
            kwargs.update(
                msgs=[{"role": "system", "content": [system]}, {"role": "user", "content": [*images, user]}],
                stream=False,
                generate_audio=False,
                use_tts_template=False,
            )
        else:  # MiniCPM-V 4.5: the system prompt apart, streamed
            kwargs.update(
                msgs=[{"role": "user", "content": [*images, user]}],
                system_prompt=system,
                stream=True,
                sampling=True,  # V-4.5 / o-2.6 assert it with stream=True; do_sample=False still decodes greedily
                tokenizer=getattr(model, "tokenizer", None),
            )
            if self.capabilities.video and len(images) > 1:
                ids = [round(f.media_time * 10) for f in request.frames]  # the card's 0.1 s units
                kwargs["temporal_ids"] = [ids[i : i + FRAMES_PER_GROUP] for i in range(0, len(ids), FRAMES_PER_GROUP)]

        def produce(emit: Callable[[Any], None], should_stop: Callable[[], bool]) -> None:
            self.ledger.forget()  # chat() leaves the streaming session in an unknown state
            replies = model.chat(**kwargs)
            try:
                for text in [replies] if isinstance(replies, str) else replies:
                    if should_stop():
                        return
                    if text := self.markup.remove(str(text)):
                        emit(("text", text))
            finally:
                if hasattr(replies, "close"):
                    replies.close()

        return produce

    # --- voice instructions ---
    def _transcribe(self, sample_rate: int, samples: np.ndarray) -> str:
        """MiniCPM-o's own speech recognition (16 kHz mono float), taking its turn with commentary."""
        msgs = [{"role": "user", "content": [ASR_PROMPT, samples]}]
        with self._lock:
            self.ledger.forget()  # the chat turn may disturb the streaming session
            reply = self._model.chat(
                msgs=msgs,
                do_sample=False,
                num_beams=1,
                max_new_tokens=128,
                generate_audio=False,
                use_tts_template=False,
            )
        return self.markup.remove(str(getattr(reply, "text", reply))).strip()

    def close(self) -> None:
        """Drop the model and return its GPU memory. Safe to call twice."""
        if getattr(self, "_model", None) is None:
            return
        acquired = self._lock.acquire(timeout=self.token_timeout)  # a stuck generation must not hang shutdown
        try:
            self._model = None
        finally:
            if acquired:
                self._lock.release()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _image(frame: Frame) -> Image.Image:
    return Image.fromarray(frame.image).convert("RGB")
