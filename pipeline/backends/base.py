"""The backend protocol and the registry by name.

A backend is one small class with a ``stream`` generator (after simonw/llm): adding an engine
means one module plus one line in ``REGISTRY``. Modules are imported only when chosen, so
``python app.py --help`` never pays for torch.
"""

from __future__ import annotations

import importlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.errors import BackendError, ConfigError
from pipeline.frames import Frame
from pipeline.prompts import PromptParts
from pipeline.speech.engines import Speech

if TYPE_CHECKING:
    from pipeline.config import Settings


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can take and give, so the commentator shapes requests to fit."""

    images: bool = True
    video: bool = False
    audio_out: bool = False
    max_frames: int = 8


@dataclass(slots=True)
class CommentRequest:
    """One comment to generate. ``timings`` is filled by the backend with ``time.perf_counter()``
    marks ``model_start`` and ``model_first_token`` so the pipeline can tell its own overhead
    from the model's time to first token."""

    frames: list[Frame]
    prompt: PromptParts
    max_tokens: int
    temperature: float
    trigger: str = "active"
    cancel: threading.Event = field(default_factory=threading.Event)
    timings: dict[str, float] = field(default_factory=dict)
    on_audio: Callable[[Speech], None] | None = None  # backends with their own voice hand audio here
    stream_id: str = ""  # which session asks: a backend keeping per-session model state tells them apart
    reference_audio: str | None = None  # the profile's voice clip, for backends that speak in a cloned voice
    stop: list[str] = field(default_factory=list)  # stop strings from the profile
    # A watch-rule check instead of a comment: the rule's words, and the JSON schema the answer must meet
    # (engines with structured output are held to it; the offline narrator judges ``question`` itself).
    question: str = ""
    answer_schema: dict[str, Any] | None = None


class Backend(ABC):
    """Streams text deltas for a request. Must honour ``request.cancel`` promptly, raise
    BackendError with a user-fit message on failure, and never block forever."""

    name: ClassVar[str]
    capabilities: Capabilities = Capabilities()
    keeps_stream_state: ClassVar[bool] = False  # model state per stream (a KV cache): switching streams costs

    @property
    def parallel(self) -> int:
        """Requests it serves at once; the scheduler in front of it (``pipeline.scheduler``) keeps to it."""
        return 1

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings) -> Backend:
        """Build from run settings; raise BackendError (user-fit message) when it cannot load."""

    @property
    @abstractmethod
    def description(self) -> str:
        """Human summary for status lines: engine, model and device."""

    @abstractmethod
    def stream(self, request: CommentRequest) -> Iterator[str]:
        """Yield text deltas; return when done or cancelled."""

    def rule_problem(self, rule_text: str) -> str | None:
        """Why this backend cannot check a watch rule (None: it can). A model reads any words; the offline
        narrator only its measurements, and a rule it cannot judge is refused at Start, not ignored."""
        return None

    def rule_meaning(self, rule_text: str) -> str | None:
        """What this backend will judge for a rule, when it reads less than the words (None: the words)."""
        return None

    def close(self) -> None:
        """Release threads, connections and memory. Safe to call twice."""


REGISTRY: dict[str, str] = {
    "opencv": "pipeline.backends.opencv_narrator:OpenCVNarrator",
    "transformers": "pipeline.backends.transformers_vlm:TransformersVLM",
    "minicpm": "pipeline.backends.minicpm:MiniCPM",
    "openai": "pipeline.backends.openai_compat:OpenAICompatible",
}


def backend_names() -> list[str]:
    """Names accepted by ``--backend``: ``auto`` plus every registered backend."""
    return ["auto", *REGISTRY]


def check_backend_name(name: str, where: Callable[[], str]) -> None:
    """Fail early (before opening sources or loading models) on a backend name that does not exist; ``where()``
    names where it was given (asked only then)."""
    if name.strip().lower() not in backend_names():
        raise ConfigError(f"{where()}: unknown backend '{name}'; allowed: {', '.join(backend_names())}")


def _backend_class(name: str) -> type[Backend]:
    if name not in REGISTRY:
        raise ConfigError(
            f"--backend / ONLOOKER_BACKEND: unknown backend '{name}'; allowed: {', '.join(backend_names())}"
        )
    module_name, class_name = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


@dataclass(frozen=True, slots=True)
class Choice:
    """The backend that was created and why it was picked (shown in the CLI and the UI)."""

    backend: Backend
    reason: str
    fallback: bool = False


def create_backend(settings: Settings) -> Choice:
    """Create the configured backend; ``auto`` prefers a model when one is configured and falls
    back to the offline OpenCV narrator, saying why, when none is or it cannot load."""
    name = settings.backend.strip().lower()
    if name != "auto":
        return Choice(_backend_class(name).from_settings(settings), f"backend '{name}' was requested")
    if settings.base_url:
        return Choice(
            _backend_class("openai").from_settings(settings), f"a server was configured ({settings.base_url})"
        )
    if settings.model:
        # MiniCPM checkpoints run their own code, which only the minicpm backend loads.
        engine = "minicpm" if "minicpm" in settings.model.lower() else "transformers"
        try:
            backend = _backend_class(engine).from_settings(settings)
        except BackendError as exc:
            return Choice(
                _backend_class("opencv").from_settings(settings),
                f"could not load model '{settings.model}' ({exc}); using the offline OpenCV narrator",
                fallback=True,
            )
        return Choice(backend, f"a model was configured ('{settings.model}', run by the {engine} backend)")
    return Choice(
        _backend_class("opencv").from_settings(settings),
        "no model configured (pass --model or set ONLOOKER_MODEL for a vision-language model); "
        "using the offline OpenCV narrator",
        fallback=True,
    )
