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
import importlib.util
import logging
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from pipeline.backends.base import Backend, Capabilities, CommentRequest
from pipeline.backends.prefill import starts_over
from pipeline.backends.remote_code import quiet_transformers, settings_aware_import_check
from pipeline.backends.transformers_vlm import locate_model, resolve_device
from pipeline.backends.worker import stream_generation
from pipeline.errors import BackendError
from pipeline.frames import Frame
from pipeline.prompts import PromptParts
from pipeline.speech.engines import Speech

if TYPE_CHECKING:
    from pipeline.config import Settings

log = logging.getLogger(__name__)
# o-4.5's chat() always passes its sampling settings (top_p, top_k, temperature), so every greedy call
# (the ASR hook, the chat baseline) would print transformers' "`do_sample` is set to `False`" notice.
warnings.filterwarnings("ignore", message="`do_sample` is set to `False`", category=UserWarning)

THREAD_NAME = "onlooker-minicpm-generate"
DEFAULT_MODEL = "openbmb/MiniCPM-o-4_5"
VOICE_RATE = 24_000
TOKENS_PER_FRAME = 66  # one 448 px slice: 64 resampler queries between <image> and </image>; then measured
TURN_TOKENS = 6  # what opens a new user turn after a reply: <|tts_eos|><|im_end|>\n<|im_start|>user\n
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
VOICE_PIP = "minicpmo-utils[all]>=1.0.2"  # Step-Audio's Token2wav vocoder (`from stepaudio2 import Token2wav`)
# The voices the published repository ships under assets/, tried in this order when no profile gives one.
DEFAULT_VOICES = (
    "assets/HT_ref_audio.wav",
    "assets/system_ref_audio.wav",
    "assets/ref_audio/ref_minicpm_signature.wav",
)


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


class Markup:
    """The model's added tokens (``<image>``, ``<unit>``, ``<|im_end|>`` and a hundred more).

    Dropped from what the model says, and from text fed to it: its processor reads them as structure,
    so an ``</image>`` in an earlier comment or in the user's instructions would break the next prefill
    (``torch.hstack`` of mismatched image bounds) and an ``<|im_end|>`` would close a turn.
    """

    def __init__(self, tokenizer: Any) -> None:
        added = tokenizer.get_added_vocab() if callable(getattr(tokenizer, "get_added_vocab", None)) else {}
        tokens = sorted((t for t in added if t.startswith("<") and t.endswith(">")), key=len, reverse=True)
        self.pattern = re.compile("|".join([*map(re.escape, tokens), _SPECIAL.pattern]))

    def remove(self, text: str) -> str:
        return self.pattern.sub("", text)


CHUNK_TOKENS = 10  # o-4.5's streaming_generate decodes in chunks of 10 tokens (the first 11)


def decode_budget(max_tokens: int) -> int:
    """``max_new_tokens`` for o-4.5 so it does not pass ``max_tokens``: it decodes whole chunks of 10,
    so a limit that is not a multiple of 10 is overshot by up to 10 (below 10, ``TokenCap`` trims)."""
    return max(CHUNK_TOKENS, max_tokens - max_tokens % CHUNK_TOKENS)


class TokenCap:
    """Cuts streamed text at ``limit`` tokens of ``tokenizer``, for a decoder that may run past it."""

    def __init__(self, tokenizer: Any, limit: int) -> None:
        self.tokenizer = tokenizer
        self.limit = limit
        self.text = ""

    def take(self, delta: str) -> tuple[str, bool]:
        """(the part of ``delta`` within the limit, whether the limit is reached)."""
        full = self.text + delta
        ids = self.tokenizer.encode(full, add_special_tokens=False)
        if len(ids) < self.limit:
            self.text = full
            return delta, False
        kept = self.tokenizer.decode(ids[: self.limit]) if len(ids) > self.limit else full
        part = kept[len(self.text) :] if kept.startswith(self.text) else ""
        self.text = kept
        return part, True


def kv_length(model: Any) -> int | None:
    """Tokens in o-4.5's streaming KV cache, or None for a model that does not say."""
    length = getattr(model, "_get_kv_cache_length", None)
    return int(length()) if callable(length) else None


def text_tokens(model: Any, text: str) -> int:
    """Tokens ``text`` costs with the model's own tokenizer (a 4-characters-a-token guess before it has one)."""
    processor = getattr(model, "processor", None)
    tokenizer = getattr(processor, "tokenizer", None)
    return len(tokenizer.encode(text, add_special_tokens=False)) if tokenizer is not None else len(text) // 4 + 8


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
    scene cut, or the context would pass the budget) and which frames are new to it. Token counts are
    the model's real KV-cache length where it tells (``synced``); the cost of a frame is learned from
    the first frames prefilled, so the budget check uses what this checkpoint really spends.
    """

    def __init__(self, budget: int = CONTEXT_BUDGET, frame_tokens: int = TOKENS_PER_FRAME) -> None:
        self.budget = budget
        self.frame_tokens = frame_tokens
        self.owner: str | None = None
        self.last_time: float | None = None
        self.tokens = 0  # in the session now
        self.expected = 0  # what the last plan said the session would hold after its prefill
        self.prefilled = 0  # frames prefilled since the session began
        self.resets = 0

    def plan(self, owner: str, frames: list[Frame], trigger: str, text_tokens: int) -> tuple[bool, list[Frame]]:
        """(reset first?, frames to prefill) for a comment on ``frames`` with ``text_tokens`` of prompt
        and reply; ``expected`` becomes the session's length after the prefill (reply excluded)."""
        reset = starts_over(owner, self.owner, trigger)
        new = frames if reset else [f for f in frames if self.last_time is None or f.media_time > self.last_time]
        if not reset and self.tokens + len(new) * self.frame_tokens + text_tokens > self.budget:
            reset, new = True, frames
        return reset, new

    def started(self, owner: str, system_tokens: int) -> None:
        self.owner, self.last_time, self.tokens, self.prefilled = owner, None, system_tokens, 0
        self.resets += 1

    def added(self, frames: list[Frame], tokens: int) -> None:
        """``frames`` went in, costing ``tokens`` in all (measured, or estimated as ``frame_tokens`` each)."""
        if frames:
            self.last_time = frames[-1].media_time
            self.frame_tokens = max(1, round(tokens / len(frames)))
        self.prefilled += len(frames)
        self.tokens += tokens

    def synced(self, tokens: int | None) -> None:
        """The model says how long its cache is (replies and its own sliding window included)."""
        if tokens is not None:
            self.tokens = tokens

    def forget(self) -> None:
        """The session state is unknown (a failed or cancelled turn): start over next time."""
        self.owner = None


def load_remote_model(path: Path, dtype: torch.dtype, attn: str, vision_only: bool, device: torch.device) -> Any:
    """``AutoModel.from_pretrained`` with the model's own code, as the model card loads it."""
    from transformers import AutoModel

    kwargs: dict[str, Any] = {"trust_remote_code": True, "attn_implementation": attn, "torch_dtype": dtype}
    if vision_only:
        kwargs.update(init_vision=True, init_audio=False, init_tts=False)
    with settings_aware_import_check(), quiet_transformers():
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
        self.voice_error = self._voice_unavailable(vision_only)
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

    def _voice_unavailable(self, vision_only: bool) -> str:
        """Why the model's own voice cannot be used here ("" when it can be tried)."""
        if vision_only or (self.variant is not None and self.variant.family == "v") or not self.streaming:
            return "vision-only model: speech comes from the fallback engine"
        if self.uses_chat:
            return "--no-incremental-prefill uses the model's chat(), which does not stream its voice; using espeak-ng"
        if not hasattr(self._model, "tts"):
            return "this checkpoint has no speech module (init_tts is off in its config); using espeak-ng"
        return ""

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
        clip = reference_audio or self._default_voice()
        self._model.init_token2wav_cache(prompt_speech_16k=self._reference(clip))
        self._voice_ref = reference_audio

    def _default_voice(self) -> str:
        for name in DEFAULT_VOICES:
            if (self.path / name).is_file():
                return str(self.path / name)
        raise BackendError(
            f"no voice to speak with: '{self.path}' has none of {', '.join(DEFAULT_VOICES)} and the profile "
            "gives no voice clip (voice.reference_audio)"
        )

    @staticmethod
    def _reference(path: str) -> np.ndarray:
        """A voice clip (WAV, FLAC, OGG) as mono float32 at 16 kHz, what the model's voice cloning takes."""
        import soundfile
        import soxr

        try:
            samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
        except (OSError, RuntimeError, soundfile.LibsndfileError) as exc:
            raise BackendError(f"voice clip '{path}' is not a readable audio file ({exc})") from None
        mono = samples.mean(axis=1)
        return soxr.resample(mono, rate, 16_000).astype(np.float32) if rate != 16_000 else mono

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
