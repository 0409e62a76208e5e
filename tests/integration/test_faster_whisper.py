"""Spoken instructions through faster-whisper on a real recording (espeak), with a tiny random model.

The Whisper model is tiny and random (built offline by ``tests/helpers/tiny_whisper.py``): its text is garbage, so
tests check structure and behaviour (a non-empty single-line str, the right errors), never the wording. Audio
normalisation and the rest of the transcriber choice: ``tests/unit/test_transcribe.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soxr

from pipeline.errors import OnlookerError
from pipeline.prompts import Voice
from pipeline.speech.engines import Speech
from pipeline.speech.espeak import EspeakEngine
from pipeline.speech.transcribe import (
    SAMPLE_RATE,
    BackendTranscriber,
    FasterWhisperTranscriber,
    find_transcriber,
)
from tests.helpers.transcribing_backend import FakeBackend


@pytest.fixture(scope="module")
def whisper(tiny_whisper: Path) -> FasterWhisperTranscriber:
    return FasterWhisperTranscriber(str(tiny_whisper))


@pytest.fixture(scope="module")
def spoken() -> Speech:
    return EspeakEngine().synthesize("focus on the goalkeeper", Voice())


def assert_heard(text: object) -> None:
    assert isinstance(text, str)
    assert text and text == text.strip() and "\n" not in text


def test_faster_whisper_transcribes_an_espeak_recording(whisper, spoken):
    assert spoken.samples.dtype == np.int16 and spoken.sample_rate != SAMPLE_RATE
    assert_heard(whisper.transcribe(spoken.sample_rate, spoken.samples))
    assert whisper.name == "faster-whisper ct2"


def test_stereo_48k_and_float_recordings_are_accepted(whisper, spoken):
    mono48 = soxr.resample(spoken.samples, spoken.sample_rate, 48000)
    stereo = np.stack([mono48, mono48 // 2], axis=1)
    assert stereo.shape[1] == 2 and stereo.dtype == np.int16
    assert_heard(whisper.transcribe(48000, stereo))
    assert_heard(whisper.transcribe(48000, stereo.astype(np.float32) / 32768))


def test_faster_whisper_refuses_bad_recordings_before_decoding(whisper, monkeypatch):
    monkeypatch.setattr(whisper.model, "transcribe", lambda *a, **k: pytest.fail("decoded a refused recording"))
    with pytest.raises(OnlookerError, match=r"shorter than 0\.3 s"):
        whisper.transcribe(16000, np.full(1600, 8000, np.int16))
    with pytest.raises(OnlookerError, match="no speech heard"):
        whisper.transcribe(16000, np.zeros(16000, np.int16))


def test_engine_failure_is_a_user_fit_error(whisper, spoken, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA failed with error out of memory\nstack trace follows")

    monkeypatch.setattr(whisper.model, "transcribe", broken)
    with pytest.raises(OnlookerError, match=r"^speech recognition failed: CUDA failed with error out of memory$"):
        whisper.transcribe(spoken.sample_rate, spoken.samples)


def test_a_backend_that_transcribes_takes_precedence(tiny_whisper, spoken):
    backend = FakeBackend("  focus on\n the   goalkeeper ")
    transcriber, reason = find_transcriber(str(tiny_whisper), backend)
    assert isinstance(transcriber, BackendTranscriber) and reason == ""
    assert transcriber.transcribe(spoken.sample_rate, spoken.samples) == "focus on the goalkeeper"
    ((rate, audio),) = backend.calls
    assert rate == SAMPLE_RATE and audio.dtype == np.float32 and audio.ndim == 1  # what MiniCPM-o expects


def test_a_backend_without_transcribe_falls_back_to_faster_whisper(tiny_whisper):
    class Plain:
        transcribe = "not callable"

    transcriber, reason = find_transcriber(str(tiny_whisper), Plain())
    assert isinstance(transcriber, FasterWhisperTranscriber) and reason == ""
