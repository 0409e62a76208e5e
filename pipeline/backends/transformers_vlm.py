"""Any Hugging Face image-text-to-text model through ``transformers`` (Qwen2-VL, LLaVA, Idefics3, ...).

Imported only when this backend is chosen, so torch is paid for only then. ``generate`` runs in a
worker thread (``pipeline.backends.worker``) whose streamer hands text to a queue the consumer polls
with a short timeout, so a worker that died, stalled or was cancelled never blocks the pipeline.
"""

from __future__ import annotations

import copy
import gc
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from pipeline.backends.base import Backend, Capabilities, CommentRequest
from pipeline.backends.worker import stream_generation
from pipeline.errors import BackendError

if TYPE_CHECKING:
    from pipeline.config import Settings

log = logging.getLogger(__name__)

THREAD_NAME = "onlooker-transformers-generate"
# Enough to load any transformers model; skips *.bin/*.pth/*.gguf/ONNX duplicates that can be many GB.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]
# Sampling knobs that only warn when greedy decoding meets a model's sampling defaults.
SAMPLING_KNOBS = ("temperature", "top_p", "top_k", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")


def resolve_device(device: str) -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a usable device, or say why it is not usable."""
    name = device.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BackendError(
                f"--device {device}: CUDA is not available to torch {torch.__version__} "
                "(no GPU, no driver, or a CPU-only torch build); use --device cpu or auto"
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BackendError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return dev
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise BackendError("--device mps: Apple MPS is not available here; use --device cpu or auto")
        return torch.device("mps")
    raise BackendError(f"--device {device}: unknown device; allowed: auto, cpu, cuda, cuda:N, mps")


def pick_dtype(device: torch.device) -> torch.dtype:
    """Half precision where the accelerator is built for it; float32 on CPU, where half is slow or unsupported."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def _looks_like_path(model: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if model.startswith((".", "~", "/", "\\")) or "\\" in model or Path(model).is_absolute():
        return True
    try:
        validate_repo_id(model)
    except HFValidationError:
        return True
    return False


def _download(model: str, allow_patterns: list[str] | None) -> Path:
    """Fetch (or find in the standard cache) the files needed to load ``model`` from the hub
    (``allow_patterns``; None = the whole repository, for models that bring their own code and assets)."""
    import requests
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(model, allow_patterns=allow_patterns))
    except GatedRepoError:
        raise BackendError(
            f"model '{model}' is gated on the Hugging Face hub: accept its terms at https://huggingface.co/{model} "
            "and log in with `huggingface-cli login`"
        ) from None
    except RepositoryNotFoundError:
        raise BackendError(
            f"model '{model}' is neither a local directory nor a model on the Hugging Face hub "
            "(check the spelling; private models need `huggingface-cli login`)"
        ) from None
    except RevisionNotFoundError as exc:
        raise BackendError(f"model '{model}': {exc}") from None
    except (LocalEntryNotFoundError, requests.exceptions.ConnectionError, requests.exceptions.Timeout):
        raise BackendError(
            f"model '{model}' is not in the local Hugging Face cache and the hub cannot be reached; "
            f"download it on a connected machine with `huggingface-cli download {model}` (or copy it) "
            "and pass its local path with --model"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise BackendError(f"downloading model '{model}' failed: {' '.join(str(exc).split())}") from None


def locate_model(model: str, allow_patterns: list[str] | None = ALLOW_PATTERNS) -> Path:
    """A local model directory for ``model``: the path itself, or a hub snapshot in the standard cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise BackendError(
            f"model path '{model}' is a file; pass the model's directory (the one with config.json) or a hub id"
        )
    if _looks_like_path(model):
        raise BackendError(f"model path '{model}' does not exist")
    return _download(model, allow_patterns)


def _model_kind(config: Any) -> str:
    """Say what a non image-text-to-text model is, so the user knows why it was refused."""
    from transformers.models.auto import modeling_auto as auto

    kinds = [
        ("MODEL_FOR_VISION_2_SEQ_MAPPING_NAMES", "an image-to-text (captioning) model without chat support"),
        ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "a text-only language model"),
        ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "a text-only sequence-to-sequence model"),
        ("MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES", "a speech-to-text model"),
        ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "an image-classification model"),
        ("MODEL_FOR_MASKED_LM_MAPPING_NAMES", "a masked (fill-in-the-blank) language model"),
    ]
    for mapping, kind in kinds:
        if config.model_type in getattr(auto, mapping, {}):
            return kind
    return "not an image-text-to-text model"


class TransformersVLM(Backend):
    """A vision-language model run in-process by ``transformers``; one model shared by all sessions."""

    name = "transformers"

    def __init__(self, model: str, device: str = "auto", token_timeout: float = 60.0, max_frames: int = 8) -> None:
        if not model:
            raise BackendError("no model given: pass --model or set ONLOOKER_MODEL (a hub id or a local path)")
        self.model_id = model
        self.token_timeout = token_timeout
        self.capabilities = Capabilities(images=True, video=False, max_frames=max_frames)
        self._lock = threading.Lock()
        self.device = resolve_device(device)
        self.dtype = pick_dtype(self.device)
        self.path = locate_model(model)
        self._processor, self._model = self._load(self.path)
        self._tokenizer = self._processor.tokenizer
        # Some tokenizers emit token_type_ids that generate() rejects as unused unless forward() takes them.
        self._drop_token_type_ids = "token_type_ids" not in inspect.signature(self._model.forward).parameters

    @classmethod
    def from_settings(cls, settings: Settings) -> TransformersVLM:
        """Load ``settings.model`` on ``settings.device``; every failure is a one-line BackendError."""
        return cls(settings.model or "", device=settings.device, token_timeout=settings.token_timeout)

    def _load(self, path: Path) -> tuple[Any, Any]:
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        if not (path / "config.json").is_file():
            hint = " (it holds GGUF files, which this backend cannot load)" if any(path.glob("*.gguf")) else ""
            raise BackendError(f"'{path}' is not a transformers model directory: it has no config.json{hint}")
        try:
            config = AutoConfig.from_pretrained(path)
        except (ValueError, KeyError) as exc:
            import transformers

            message = " ".join(str(exc).split())
            if "trust_remote_code" in message:
                raise BackendError(
                    f"model '{self.model_id}' needs its own Python code (trust_remote_code), which this backend "
                    "does not run; pick a model supported by transformers itself"
                ) from None
            raise BackendError(
                f"model '{self.model_id}' has a model type that transformers {transformers.__version__} does not "
                f"know ({message}); upgrade transformers or pick another model"
            ) from None
        except OSError as exc:
            raise BackendError(f"model '{self.model_id}': cannot read config.json ({exc})") from None
        if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
            archs = ", ".join(getattr(config, "architectures", None) or []) or "unknown architecture"
            raise BackendError(
                f"model '{self.model_id}' is {_model_kind(config)} (model_type '{config.model_type}', {archs}); "
                "the transformers backend needs an image-text-to-text (vision-language) model, "
                "e.g. Qwen/Qwen2-VL-2B-Instruct"
            )
        try:
            processor = AutoProcessor.from_pretrained(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"model '{self.model_id}': cannot load its processor ({exc})") from None
        if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
            raise BackendError(f"model '{self.model_id}' has no image processor, so it cannot take frames")
        if not getattr(processor, "chat_template", None):
            raise BackendError(f"model '{self.model_id}' has no chat template; use an instruction-tuned (chat) model")
        try:
            model = AutoModelForImageTextToText.from_pretrained(
                path, torch_dtype=self.dtype, device_map={"": str(self.device)}
            )
        except torch.cuda.OutOfMemoryError:
            raise BackendError(
                f"model '{self.model_id}' does not fit in the memory of {self.device}; pick a smaller model"
            ) from None
        except (OSError, ValueError, RuntimeError, ImportError) as exc:
            raise BackendError(
                f"model '{self.model_id}': cannot load its weights ({' '.join(str(exc).split())})"
            ) from None
        model.eval()
        return processor, model

    @property
    def description(self) -> str:
        """``transformers · <model> on <device> (<dtype>)`` for status lines."""
        name = self.path.name if Path(self.model_id).expanduser().is_dir() else self.model_id
        return f"transformers · {name} on {self.device} ({str(self.dtype).removeprefix('torch.')})"

    def _prepare(self, request: CommentRequest) -> Any:
        """Chat-template the prompt with one image part per frame and run the processor."""
        images = [Image.fromarray(f.image).convert("RGB") for f in request.frames]
        user = [*({"type": "image"} for _ in images), {"type": "text", "text": request.prompt.user}]
        messages = [
            {"role": "system", "content": [{"type": "text", "text": request.prompt.system}]},
            {"role": "user", "content": user},
        ]
        from jinja2 import TemplateError

        try:
            try:
                text = self._processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            except TemplateError:
                # Some templates refuse a system turn: fold the system text into the user turn instead.
                merged = [*user[:-1], {"type": "text", "text": f"{request.prompt.system}\n\n{request.prompt.user}"}]
                text = self._processor.apply_chat_template(
                    [{"role": "user", "content": merged}], add_generation_prompt=True, tokenize=False
                )
            inputs = self._processor(text=[text], images=images or None, return_tensors="pt")
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError, TemplateError) as exc:
            raise BackendError(
                f"model '{self.model_id}' could not prepare {len(images)} frame(s) and the prompt: {exc}"
            ) from None
        if self._drop_token_type_ids:
            inputs.pop("token_type_ids", None)
        return inputs.to(self.device, dtype=self.dtype)

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
        inputs = self._prepare(request)
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
                model.generate(
                    **inputs,
                    generation_config=config,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_Cancel()]),
                )

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
        finally:
            if acquired:
                self._lock.release()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
