"""MiniCPM-o 4.5 (vision + speech, its own voice) and MiniCPM-V 4.5 (vision only), in process.

The models run their own code (``trust_remote_code``); the calls used here follow OpenBMB's model
cards and modeling code as read in ``docs/minicpm-api.md``:

* **MiniCPM-o**: the streaming session API. Each frame is prefilled once, as an image, into a
  session that keeps its KV cache (``streaming_prefill``); a comment prefills only the frames that
  arrived since the last one plus the prompt, then decodes (``streaming_generate``), so its cost does
  not grow with the window. The session is reset at scene cuts, when another Onlooker session uses
  the model, and before the context passes ``CONTEXT_BUDGET`` tokens (the prompt carries the recent
  comments, the short summary of what was said). ``chat(stream=True)`` is not used for o-4.5: in the
  published code it fails after starting its generate thread.
  ``--no-incremental-prefill`` starts the session over for every comment and prefills the whole
  window: the naive baseline.
* **MiniCPM-V**: ``chat(stream=True)`` with the window's frames as images (``use_image_id=False``,
  ``max_slice_nums`` from settings, ``temporal_ids`` in groups of ``FRAMES_PER_GROUP``).

Everything runs in one worker thread at a time (``pipeline.backends.worker``): the session state
lives on the model object, so sessions take turns.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from pipeline.backends.base import Backend, Capabilities, CommentRequest
from pipeline.backends.remote_code import settings_aware_import_check
from pipeline.backends.transformers_vlm import locate_model, resolve_device
from pipeline.backends.worker import stream_generation
from pipeline.errors import BackendError
from pipeline.frames import Frame
from pipeline.prompts import PromptParts
from pipeline.speech.engines import Speech

if TYPE_CHECKING:
    from pipeline.config import Settings

log = logging.getLogger(__name__)

THREAD_NAME = "onlooker-minicpm-generate"
DEFAULT_MODEL = "openbmb/MiniCPM-o-4_5"
VOICE_RATE = 24_000
TOKENS_PER_FRAME = 64  # one 448 px slice through the resampler
CONTEXT_BUDGET = 6000  # below o-4.5's own 8000-token sliding window, so our reset comes first
FRAMES_PER_GROUP = 3  # MiniCPM-V 4.5 packs frames into 3D-resampler groups; the card packs 3
ASR_PROMPT = "Please listen to the audio snippet carefully and transcribe the content.\n"
SUPPORTED_TRANSFORMERS = "4.51."
_SPECIAL = re.compile(r"<\|[^|>]*\|>|</?think>")


@dataclass(frozen=True)
class Variant:
    """A published checkpoint and what it needs."""

    family: str  # "o" (vision + audio + voice) or "v" (vision only)
    bf16_gb: float
    int4: str  # the repository of its 4-bit build
    int4_gb: float
    int4_package: str  # import name of the loader the 4-bit build needs
    int4_pip: str


VARIANTS = {
    "openbmb/MiniCPM-o-4_5": Variant("o", 19.0, "openbmb/MiniCPM-o-4_5-awq", 11.0, "awq", "autoawq"),
    "openbmb/MiniCPM-V-4_5": Variant("v", 18.0, "openbmb/MiniCPM-V-4_5-AWQ", 9.0, "awq", "autoawq"),
}
OMNI_PACKAGES = {"minicpmo": "minicpmo-utils[all]>=1.0.2", "soundfile": "soundfile", "librosa": "librosa"}


def variant_of(model: str) -> Variant | None:
    """The known checkpoint ``model`` names (its BF16 or its 4-bit repository), if any."""
    for name, variant in VARIANTS.items():
        if model.lower() in (name.lower(), variant.int4.lower()):
            return variant
    return None


def choose_precision(requested: str, free_gb: float | None, variant: Variant | None) -> tuple[str, str]:
    """(``bf16`` | ``int4``, why) for ``--precision``; ``auto`` takes INT4 when BF16 does not fit."""
    if requested != "auto":
        return requested, f"--precision {requested}"
    if free_gb is None:
        return "bf16", "no GPU: full precision on the CPU"
    if variant is None:
        return "bf16", "a local or unknown checkpoint is loaded as it is"
    if free_gb >= variant.bf16_gb:
        return "bf16", f"{free_gb:.0f} GB free, BF16 needs ~{variant.bf16_gb:.0f} GB"
    if free_gb >= variant.int4_gb:
        return "int4", f"{free_gb:.0f} GB free: too little for BF16 (~{variant.bf16_gb:.0f} GB), INT4 fits"
    raise BackendError(
        f"not enough GPU memory: {free_gb:.1f} GB free, MiniCPM needs ~{variant.bf16_gb:.0f} GB in BF16 or "
        f"~{variant.int4_gb:.0f} GB in INT4 ({variant.int4}); free the GPU, use --vision-only with "
        "openbmb/MiniCPM-V-4_5, or serve it on a bigger machine with --backend openai"
    )


def missing_packages(needed: dict[str, str]) -> list[str]:
    """pip requirements of ``needed`` (import name → requirement) that are not importable."""
    return [pip for name, pip in needed.items() if importlib.util.find_spec(name) is None]


def check_transformers(version: str) -> None:
    """The model card pins transformers 4.51.x; other versions break its remote code in odd ways."""
    if not version.startswith(SUPPORTED_TRANSFORMERS):
        raise BackendError(
            f"MiniCPM's model code needs transformers {SUPPORTED_TRANSFORMERS}x, this is {version}; "
            "run `pip install transformers==4.51.3`"
        )


def clean_text(text: str) -> str:
    """Drop the special tokens the streaming decoder passes through (<|tts_eos|>, <|im_end|>, <think>)."""
    return _SPECIAL.sub("", text)


def parse_chunk(chunk: Any) -> tuple[str, np.ndarray | None]:
    """(text delta, 24 kHz float audio or None) from whatever ``streaming_generate`` yields:
    o-4.5 ``(text, is_finished)`` or ``(waveform [1, n], text)``; o-2.6 ``{"text": ...}`` or an
    output with ``.text`` and ``.audio_wav``."""
    if isinstance(chunk, tuple) and len(chunk) == 2:
        first, second = chunk
        if isinstance(first, str):
            return first, None
        return str(second or ""), _as_audio(first)
    if isinstance(chunk, dict):
        return str(chunk.get("text") or ""), _as_audio(chunk.get("audio_wav"))
    return str(getattr(chunk, "text", "") or ""), _as_audio(getattr(chunk, "audio_wav", None))


def _as_audio(wave: Any) -> np.ndarray | None:
    if wave is None:
        return None
    samples = wave.detach().float().cpu().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave)
    samples = samples.reshape(-1).astype(np.float32)
    return samples if len(samples) else None


def to_speech(samples: np.ndarray, rate: int = VOICE_RATE) -> Speech:
    return Speech(rate, np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16))


class PrefillLedger:
    """What the model's streaming session holds, so each frame is prefilled exactly once.

    ``plan`` says whether the session must start over (another Onlooker session used the model, a
    scene cut, or the context would pass the budget) and which frames are new to it.
    """

    def __init__(self, budget: int = CONTEXT_BUDGET, tokens_per_frame: int = TOKENS_PER_FRAME) -> None:
        self.budget = budget
        self.tokens_per_frame = tokens_per_frame
        self.owner: str | None = None
        self.last_time: float | None = None
        self.tokens = 0
        self.prefilled = 0  # frames prefilled since the session began
        self.resets = 0

    def plan(self, owner: str, frames: list[Frame], trigger: str, text_tokens: int) -> tuple[bool, list[Frame]]:
        """(reset first?, frames to prefill) for a comment on ``frames`` with a prompt of ``text_tokens``."""
        reset = self.owner != owner or trigger in ("start", "scene_cut")
        new = frames if reset else [f for f in frames if self.last_time is None or f.media_time > self.last_time]
        if not reset and self.tokens + len(new) * self.tokens_per_frame + text_tokens > self.budget:
            reset, new = True, frames
        return reset, new

    def started(self, owner: str, system_tokens: int) -> None:
        self.owner, self.last_time, self.tokens, self.prefilled = owner, None, system_tokens, 0
        self.resets += 1

    def added(self, frames: list[Frame], text_tokens: int) -> None:
        if frames:
            self.last_time = frames[-1].media_time
        self.prefilled += len(frames)
        self.tokens += len(frames) * self.tokens_per_frame + text_tokens

    def forget(self) -> None:
        """The session state is unknown (a failed or cancelled turn): start over next time."""
        self.owner = None


def load_remote_model(path: Path, dtype: torch.dtype, attn: str, vision_only: bool, device: torch.device) -> Any:
    """``AutoModel.from_pretrained`` with the model's own code, as the model card loads it."""
    from transformers import AutoModel

    kwargs: dict[str, Any] = {"trust_remote_code": True, "attn_implementation": attn, "torch_dtype": dtype}
    if vision_only:
        kwargs.update(init_vision=True, init_audio=False, init_tts=False)
    with settings_aware_import_check():
        model = AutoModel.from_pretrained(str(path), **kwargs)
    if not hasattr(model, "tokenizer"):  # MiniCPM-V's chat needs one passed in; o-4.5 loads its own
        from transformers import AutoTokenizer

        model.tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=True)
    return model.eval().to(device)


def pick_attention(requested: str) -> str:
    if requested != "auto":
        return requested
    from transformers.utils import is_flash_attn_2_available

    return "flash_attention_2" if is_flash_attn_2_available() else "sdpa"


class MiniCPM(Backend):
    """One MiniCPM model shared by all sessions (they take turns)."""

    name = "minicpm"

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
        needed = dict(OMNI_PACKAGES) if self._omni_wanted(vision_only) else {}
        if self.precision == "int4" and self.variant:
            needed[self.variant.int4_package] = self.variant.int4_pip
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
        self.streaming = callable(getattr(self._model, "streaming_prefill", None))
        self.incremental = incremental
        self.omni = self._omni_wanted(vision_only) and callable(getattr(self._model, "streaming_generate", None))
        self.voice_error = "" if self.omni else "vision-only model: speech comes from the fallback engine"
        if self.omni:
            self._init_voice(reference_audio)
            self.transcribe = self._transcribe  # the voice-instruction hook (pipeline.speech.transcribe)
        self.capabilities = Capabilities(
            images=True,
            video=self.variant is not None and self.variant.family == "v",
            audio_out=not self.voice_error,
            max_frames=16,
        )
        self.warmup_s = self._compile() if compile_model else 0.0

    def _omni_wanted(self, vision_only: bool) -> bool:
        return not vision_only and (self.variant is None or self.variant.family == "o")

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
            self._model.init_tts(streaming=True)
            self._set_reference(reference_audio)
        except Exception as exc:  # remote code: any failure means "no voice", never "no commentary"
            self.voice_error = f"the model's voice could not start ({type(exc).__name__}: {exc}); using espeak-ng"
            log.warning("%s", self.voice_error)

    def _set_reference(self, reference_audio: str | None) -> None:
        """Voice the model speaks with: a profile's reference clip (16 kHz), or the model's default."""
        if callable(getattr(self._model, "init_token2wav_cache", None)):
            self._model.init_token2wav_cache(prompt_speech_16k=self._reference(reference_audio))
        self._voice_ref = reference_audio

    @staticmethod
    def _reference(path: str | None) -> np.ndarray | None:
        """A 16-bit PCM WAV voice clip as mono float32 at 16 kHz (what the model's voice cloning takes)."""
        if not path:
            return None
        import wave

        import soxr

        try:
            with wave.open(path) as clip:
                rate, channels, width = clip.getframerate(), clip.getnchannels(), clip.getsampwidth()
                data = clip.readframes(clip.getnframes())
        except (OSError, EOFError, wave.Error) as exc:
            raise BackendError(f"voice clip '{path}' is not a readable WAV file ({exc})") from None
        if width != 2:
            raise BackendError(f"voice clip '{path}' must be 16-bit PCM WAV (it has {8 * width}-bit samples)")
        samples = np.frombuffer(data, "<i2").astype(np.float32).reshape(-1, channels).mean(axis=1) / 32768.0
        return soxr.resample(samples, rate, 16_000) if rate != 16_000 else samples

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
        mode = ("incremental prefill" if self.incremental else "full prefill") if self.streaming else "chat"
        voice = "own voice" if self.capabilities.audio_out else "no voice"
        warm = f", compiled in {self.warmup_s:.0f} s" if self.warmup_s else ""
        return f"minicpm · {name} ({self.precision}, {self.attn}, {mode}, {voice}{warm}) on {self.device}"

    # --- commentary ---
    def stream(self, request: CommentRequest) -> Iterator[str]:
        """Text deltas; the model's own audio goes to ``request.on_audio`` as it is generated."""
        model = self._model
        if model is None:
            raise BackendError("the MiniCPM backend was closed")
        if request.cancel.is_set():
            return
        request.timings["model_start"] = time.perf_counter()
        produce = self._produce_streaming(model, request) if self.streaming else self._produce_chat(model, request)
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
                generator = model.streaming_generate(
                    session_id=request.stream_id,
                    generate_audio=voice,
                    max_new_tokens=request.max_tokens,
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
                        if text := clean_text(text):
                            emit(("text", text))
                    finished = True
                finally:
                    generator.close()
            finally:
                if not finished:
                    self.ledger.forget()  # a half-generated turn sits in the cache: start clean next time

        return produce

    def _prefill(self, model: Any, request: CommentRequest) -> None:
        """Bring the model's session up to date: new frames once each, then the prompt."""
        ledger = self.ledger
        prompt_tokens = len(request.prompt.user) // 4 + 8
        reset, new = ledger.plan(request.stream_id, request.frames, request.trigger, prompt_tokens + request.max_tokens)
        if reset or not self.incremental:
            new = request.frames
            model.reset_session()
            system = {"role": "system", "content": [request.prompt.system]}
            model.streaming_prefill(session_id=request.stream_id, msgs=[system])
            ledger.started(request.stream_id, len(request.prompt.system) // 4 + 8)
        for frame in new:
            model.streaming_prefill(
                session_id=request.stream_id,
                msgs=[{"role": "user", "content": [_image(frame)]}],
                max_slice_nums=self.max_slice_nums,
            )
        model.streaming_prefill(session_id=request.stream_id, msgs=[{"role": "user", "content": [request.prompt.user]}])
        ledger.added(new, prompt_tokens + request.max_tokens)

    def _produce_chat(self, model: Any, request: CommentRequest) -> Callable[..., None]:
        images = [_image(f) for f in request.frames]
        kwargs: dict[str, Any] = {
            "msgs": [{"role": "user", "content": [*images, request.prompt.user]}],
            "system_prompt": request.prompt.system,
            "stream": True,
            "sampling": True,  # V-4.5 / o-2.6 assert it with stream=True; do_sample=False still decodes greedily
            "do_sample": request.temperature > 0,
            "temperature": max(request.temperature, 0.01),
            "max_new_tokens": request.max_tokens,
            "use_image_id": False,
            "max_slice_nums": self.max_slice_nums,
            "num_beams": 1,
        }
        if self.capabilities.video and len(images) > 1:
            ids = [round(f.media_time * 10) for f in request.frames]  # the card's 0.1 s units
            kwargs["temporal_ids"] = [ids[i : i + FRAMES_PER_GROUP] for i in range(0, len(ids), FRAMES_PER_GROUP)]
        tokenizer = getattr(model, "tokenizer", None)

        def produce(emit: Callable[[Any], None], should_stop: Callable[[], bool]) -> None:
            replies = model.chat(tokenizer=tokenizer, **kwargs)
            try:
                for text in [replies] if isinstance(replies, str) else replies:
                    if should_stop():
                        return
                    if text := clean_text(str(text)):
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
        return clean_text(str(getattr(reply, "text", reply))).strip()

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
