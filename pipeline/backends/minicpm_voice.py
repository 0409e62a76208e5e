"""MiniCPM-o's own voice, apart from the backend: whether it can speak, the vocoder it needs, the clip it clones.

The clip is a profile's, or one the checkpoint ships; either is read the way the model's voice
cloning takes it. None of this runs the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import BackendError

VOICE_PIP = "minicpmo-utils[all]>=1.0.2"  # Step-Audio's Token2wav vocoder (`from stepaudio2 import Token2wav`)
# The voices the published repository ships under assets/, tried in this order when no profile gives one.
DEFAULT_VOICES = (
    "assets/HT_ref_audio.wav",
    "assets/system_ref_audio.wav",
    "assets/ref_audio/ref_minicpm_signature.wav",
)


def voice_unavailable(model: Any, speechless: bool, uses_chat: bool) -> str:
    """Why the model's own voice cannot be used here ("" when it can be tried); ``speechless``: loaded or
    published without speech (vision only, MiniCPM-V, no streaming session)."""
    if speechless:
        return "vision-only model: speech comes from the fallback engine"
    if uses_chat:
        return "--no-incremental-prefill uses the model's chat(), which does not stream its voice; using espeak-ng"
    if not hasattr(model, "tts"):
        return "this checkpoint has no speech module (init_tts is off in its config); using espeak-ng"
    return ""


def default_voice(folder: Path) -> str:
    """The first of ``DEFAULT_VOICES`` the checkpoint in ``folder`` has."""
    for name in DEFAULT_VOICES:
        if (folder / name).is_file():
            return str(folder / name)
    raise BackendError(
        f"no voice to speak with: '{folder}' has none of {', '.join(DEFAULT_VOICES)} and the profile "
        "gives no voice clip (voice.reference_audio)"
    )


def read_reference(path: str) -> np.ndarray:
    """A voice clip (WAV, FLAC, OGG) as mono float32 at 16 kHz, what the model's voice cloning takes."""
    import soundfile
    import soxr

    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as exc:
        raise BackendError(f"voice clip '{path}' is not a readable audio file ({exc})") from None
    mono = samples.mean(axis=1)
    return soxr.resample(mono, rate, 16_000).astype(np.float32) if rate != 16_000 else mono
