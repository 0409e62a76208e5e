"""Speech to text for spoken instructions ("focus on the goalkeeper") recorded with the microphone.

Recognition comes from the loaded model backend when it can transcribe (MiniCPM-o has its own speech
recognition: no second model in memory), else from faster-whisper with a model already on this machine
(the app never downloads one: it may run without network). When neither is usable, ``find_transcriber``
says why in words fit for the UI, and the microphone control stays disabled with that reason.

Audio arrives as Gradio's ``gr.Audio(type="numpy")`` gives it: any rate, int16 (or other int / float)
samples, mono ``(n,)`` or ``(n, channels)``. Every transcriber first turns it into what speech models
expect: mono float32 in [-1, 1] at 16 kHz.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Protocol

import numpy as np
import soxr

from pipeline.errors import OnlookerError

SAMPLE_RATE = 16000  # what Whisper (and MiniCPM-o's audio encoder) expect
MIN_SECONDS = 0.3  # a click of the record button, not an instruction
MAX_SECONDS = 30.0  # one Whisper window; an instruction is a sentence or two
SILENCE_LEVEL = 0.005  # about -46 dBFS: the loudest 30 ms must pass this to count as speech
FRAME = SAMPLE_RATE * 30 // 1000
MAX_NEW_TOKENS = 160  # 30 s of fast speech is ~120 tokens; stops a hallucination loop early


def download_hint(name: str = "small") -> str:
    """How to get faster-whisper model ``name`` (a size such as ``small`` or a hub id) onto this machine."""
    command = f"`python -c \"from faster_whisper import download_model; download_model('{name}')\"`"
    if name == "small":
        command += " (or `hf download Systran/faster-whisper-small`)"
    return f"On a machine with network, run {command} and copy the Hugging Face cache or the model folder here."


class Transcriber(Protocol):
    """Speech to text. ``transcribe`` raises OnlookerError with a user-fit message when it fails."""

    name: str

    def transcribe(self, sample_rate: int, samples: np.ndarray) -> str:
        """The words spoken in ``samples`` (Gradio's numpy audio), stripped; never empty."""
        ...


class TranscribingBackend(Protocol):
    """The hook a model backend implements to transcribe with its own speech recognition (MiniCPM-o).

    ``samples`` is mono float32 in [-1, 1] at ``sample_rate`` (always 16 kHz); return the text heard,
    "" for none. Exceptions become "speech recognition failed: …" (OnlookerError passes through as is).
    """

    def transcribe(self, sample_rate: int, samples: np.ndarray) -> str: ...


def to_mono_16k(sample_rate: int, samples: np.ndarray) -> np.ndarray:
    """Mono float32 in [-1, 1] at 16 kHz; raises OnlookerError for empty, too short, too long or silent audio."""
    audio = np.asarray(samples)
    if audio.ndim not in (1, 2) or sample_rate <= 0:
        raise OnlookerError(f"unsupported recording: {audio.ndim}-D audio at {sample_rate} Hz")
    if audio.size == 0:
        raise OnlookerError("the recording is empty; record again and speak the instruction")
    seconds = audio.shape[0] / sample_rate
    if seconds < MIN_SECONDS:
        raise OnlookerError(f"the recording is shorter than {MIN_SECONDS} s; record again and speak a little longer")
    if seconds > MAX_SECONDS:
        raise OnlookerError(f"the recording is longer than {MAX_SECONDS:.0f} s; keep spoken instructions short")
    audio = _to_float(audio)
    if audio.ndim == 2:
        audio = audio.mean(axis=1, dtype=np.float32)
    if sample_rate != SAMPLE_RATE:
        audio = soxr.resample(audio, sample_rate, SAMPLE_RATE)
    audio = np.ascontiguousarray(np.clip(audio, -1.0, 1.0), dtype=np.float32)
    if _loudest_frame(audio) < SILENCE_LEVEL:
        raise OnlookerError("no speech heard in the recording; check the microphone and speak up")
    return audio


def _to_float(audio: np.ndarray) -> np.ndarray:
    """Integer PCM scaled to [-1, 1] (by its type's range); float passed through as float32."""
    if np.issubdtype(audio.dtype, np.floating):
        return np.nan_to_num(audio.astype(np.float32, copy=False))
    if np.issubdtype(audio.dtype, np.signedinteger):
        return audio.astype(np.float32) / float(2 ** (audio.dtype.itemsize * 8 - 1))
    if np.issubdtype(audio.dtype, np.unsignedinteger):
        middle = float(2 ** (audio.dtype.itemsize * 8 - 1))
        return (audio.astype(np.float32) - middle) / middle
    raise OnlookerError(f"unsupported recording: samples of type {audio.dtype}")


def _loudest_frame(audio: np.ndarray) -> float:
    """RMS of the loudest 30 ms frame: a short word in a long quiet recording still counts."""
    usable = len(audio) // FRAME * FRAME
    frames = audio[:usable].reshape(-1, FRAME) if usable else audio.reshape(1, -1)
    return float(np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1)).max())


def _heard(text: object) -> str:
    """The engine's text, stripped; no words means nothing was understood."""
    if not isinstance(text, str):
        raise OnlookerError(f"speech recognition failed: it returned {type(text).__name__}, not text")
    text = " ".join(text.split())
    if not text:
        raise OnlookerError("no speech heard in the recording; check the microphone and speak up")
    return text


def _one_line(exc: BaseException) -> str:
    """First line of an exception's message (or its type), for a one-line UI reason."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


class BackendTranscriber:
    """The loaded model's own speech recognition (MiniCPM-o), given mono float32 audio at 16 kHz."""

    name = "model"

    def __init__(self, backend: TranscribingBackend) -> None:
        self.backend = backend

    def transcribe(self, sample_rate: int, samples: np.ndarray) -> str:
        audio = to_mono_16k(sample_rate, samples)
        try:
            text = self.backend.transcribe(SAMPLE_RATE, audio)
        except OnlookerError:
            raise
        except Exception as exc:
            raise OnlookerError(f"speech recognition failed: {_one_line(exc)}") from exc
        return _heard(text)


class FasterWhisperTranscriber:
    """faster-whisper with a model already on this machine (``local_files_only``: never downloads).

    The model is loaded here, so a missing or broken model is reported when the app starts rather than
    at the first spoken instruction. Calls are serialised: one CTranslate2 worker, shared by all sessions.
    """

    def __init__(self, model: str, device: str = "cpu", language: str | None = None) -> None:
        folder = Path(model).expanduser()
        if _looks_like_path(model) and not folder.is_dir():
            raise OnlookerError(f"the faster-whisper model folder {model} does not exist")
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise OnlookerError(
                f"faster-whisper cannot be imported ({_one_line(exc)}); run `pip install faster-whisper`"
            ) from exc
        try:
            self.model = WhisperModel(
                str(folder) if folder.is_dir() else model,
                device=device,
                compute_type="int8" if device == "cpu" else "default",
                local_files_only=True,
            )
        except Exception as exc:
            if type(exc).__name__ == "LocalEntryNotFoundError":
                missing = f"faster-whisper model '{model}' is not in this machine's Hugging Face cache."
                raise OnlookerError(f"{missing} {download_hint(model)}") from exc
            raise OnlookerError(f"cannot load faster-whisper model '{model}': {_one_line(exc)}") from exc
        self.name = f"faster-whisper {folder.name if folder.is_dir() else model}"
        self.language = language
        self._lock = threading.Lock()

    def transcribe(self, sample_rate: int, samples: np.ndarray) -> str:
        audio = to_mono_16k(sample_rate, samples)
        try:
            with self._lock:
                segments, _info = self.model.transcribe(
                    audio,
                    language=self.language,
                    beam_size=1,
                    temperature=0.0,  # no sampling fallbacks: a live instruction wants a quick answer
                    vad_filter=False,
                    without_timestamps=True,
                    condition_on_previous_text=False,
                    max_new_tokens=MAX_NEW_TOKENS,
                )
                text = " ".join(segment.text.strip() for segment in segments)
        except Exception as exc:
            raise OnlookerError(f"speech recognition failed: {_one_line(exc)}") from exc
        return _heard(text)


def _looks_like_path(model: str) -> bool:
    """A folder was meant (not a model name such as ``small`` or a hub id such as ``Systran/x``)."""
    return model.startswith((".", "~", "/")) or Path(model).expanduser().exists()


def find_transcriber(stt_model: str | None, backend: object | None = None) -> tuple[Transcriber | None, str]:
    """(transcriber, "") when speech input can work, else (None, a one- or two-sentence reason for the UI)."""
    if callable(getattr(backend, "transcribe", None)):
        return BackendTranscriber(backend), ""  # type: ignore[arg-type]  # checked just above
    if importlib.util.find_spec("faster_whisper") is None:
        return None, (
            "Speech input is off: the model cannot transcribe and faster-whisper is not installed. "
            "Run `pip install faster-whisper` and set --stt-model to use the microphone."
        )
    if not stt_model:
        return None, (
            "Speech input is off: set --stt-model / ONLOOKER_STT_MODEL to a downloaded faster-whisper model "
            f"(a name such as `small` in the local Hugging Face cache, or a model folder). {download_hint()}"
        )
    try:
        return FasterWhisperTranscriber(stt_model), ""
    except OnlookerError as exc:
        reason = str(exc)
        return None, f"Speech input is off: {reason[0].lower()}{reason[1:]}".rstrip(".") + "."
