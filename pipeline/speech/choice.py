"""Which speech engines this run can use, and which one it starts with (``--tts``).

``auto`` prefers the model's own voice (a backend that speaks, such as MiniCPM-o), then espeak-ng.
An engine the user asked for by name must work, or the run stops with the reason; ``auto`` falls
back quietly and says what it chose.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.backends.base import Backend
from pipeline.config import Settings
from pipeline.errors import ConfigError, OnlookerError
from pipeline.speech.engines import SpeechEngine

MODEL_VOICE = "model"


@dataclass
class SpeechChoice:
    """The engines on offer (name → engine; ``None`` is the model's own voice), the one to start
    with (``None`` = speech off), and why."""

    engines: dict[str, SpeechEngine | None]
    default: str | None
    reason: str
    unavailable: dict[str, str] = field(default_factory=dict)  # engine name → why it cannot be used

    def close(self) -> None:
        for engine in self.engines.values():
            if engine is not None:
                engine.close()


def _build(name: str, settings: Settings, backend: Backend) -> SpeechEngine | None:
    if name == MODEL_VOICE:
        if not backend.capabilities.audio_out:
            raise OnlookerError(getattr(backend, "voice_error", "") or f"the backend ({backend.name}) has no voice")
        return None
    if name == "espeak":
        from pipeline.speech.espeak import EspeakEngine

        return EspeakEngine()
    if name == "openai":
        if not settings.tts_url:
            raise ConfigError("--tts openai needs --tts-url (or ONLOOKER_TTS_URL), e.g. http://localhost:8880/v1")
        from pipeline.speech.openai_tts import OpenAISpeechEngine

        return OpenAISpeechEngine.from_settings(settings)
    raise ConfigError(f"unknown speech engine '{name}'")


def choose_speech(settings: Settings, backend: Backend) -> SpeechChoice:
    """Build every engine that can work here; raise when the engine asked for by name cannot."""
    engines: dict[str, SpeechEngine | None] = {}
    unavailable: dict[str, str] = {}
    for name in (MODEL_VOICE, "espeak", "openai"):
        try:
            engines[name] = _build(name, settings, backend)
        except OnlookerError as exc:
            unavailable[name] = str(exc)
    wanted = settings.tts
    if wanted == "none":
        return SpeechChoice(engines, None, "speech is off (--tts none)", unavailable)
    if wanted != "auto":
        if wanted in unavailable:
            raise OnlookerError(f"--tts {wanted}: {unavailable[wanted]}")
        return SpeechChoice(engines, wanted, f"--tts {wanted}", unavailable)
    for name, why in ((MODEL_VOICE, "the model's own voice"), ("espeak", "offline espeak-ng voice")):
        if name in engines:
            return SpeechChoice(engines, name, why, unavailable)
    return SpeechChoice(engines, None, "no speech engine: " + "; ".join(unavailable.values()), unavailable)
