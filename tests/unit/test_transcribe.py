"""Spoken instructions: audio normalisation, a backend that transcribes, and why the microphone is off.

faster-whisper itself on a real recording (a tiny random model): ``tests/integration/test_faster_whisper.py``.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import soxr

from pipeline.errors import OnlookerError
from pipeline.prompts import Voice
from pipeline.speech import transcribe as stt
from pipeline.speech.engines import Speech
from pipeline.speech.espeak import EspeakEngine
from pipeline.speech.transcribe import (
    SAMPLE_RATE,
    BackendTranscriber,
    find_transcriber,
    to_mono_16k,
)
from tests.helpers.transcribing_backend import FakeBackend

HAVE_FASTER_WHISPER = all(importlib.util.find_spec(name) for name in ("faster_whisper", "ctranslate2"))
needs_faster_whisper = pytest.mark.skipif(
    not HAVE_FASTER_WHISPER, reason="faster-whisper is not installed: pip install -r requirements-dev.txt"
)


@pytest.fixture(scope="module")
def spoken() -> Speech:
    return EspeakEngine().synthesize("focus on the goalkeeper", Voice())


def test_audio_becomes_mono_float32_at_16k(spoken):
    mono = to_mono_16k(spoken.sample_rate, spoken.samples)
    assert mono.dtype == np.float32 and mono.ndim == 1
    assert abs(len(mono) - round(spoken.seconds * SAMPLE_RATE)) <= 2
    assert 0.05 < np.abs(mono).max() <= 1.0
    doubled = np.repeat(spoken.samples[:, None], 2, axis=1)  # identical channels average to the same signal
    np.testing.assert_allclose(to_mono_16k(spoken.sample_rate, doubled), mono, atol=1e-6)
    as_int32 = spoken.samples.astype(np.int32) << 16  # int PCM is scaled by its own type's range
    np.testing.assert_allclose(to_mono_16k(spoken.sample_rate, as_int32), mono, atol=1e-6)


@pytest.mark.parametrize(
    ("seconds", "message"),
    [
        (0.0, "the recording is empty"),
        (0.2, r"shorter than 0\.3 s"),
        (31.0, "longer than 30 s"),
    ],
)
def test_recordings_of_the_wrong_length_are_refused(spoken, seconds, message):
    rate = 48000
    loud = np.resize(soxr.resample(spoken.samples, spoken.sample_rate, rate), int(seconds * rate))
    backend = FakeBackend()
    for samples in (loud, loud.reshape(-1, 1)):
        with pytest.raises(OnlookerError, match=message):
            BackendTranscriber(backend).transcribe(rate, samples)
    assert backend.calls == []  # refused before any model runs


def test_silence_is_no_speech():
    hiss = np.random.default_rng(0).normal(0, 10, 2 * 16000).astype(np.int16)  # about -70 dBFS
    backend = FakeBackend()
    with pytest.raises(OnlookerError, match="no speech heard"):
        BackendTranscriber(backend).transcribe(16000, hiss)
    assert backend.calls == []


def test_unsupported_audio_is_refused():
    with pytest.raises(OnlookerError, match="unsupported recording"):
        to_mono_16k(16000, np.ones((2, 16000, 2), np.int16))
    with pytest.raises(OnlookerError, match="unsupported recording"):
        to_mono_16k(0, np.ones(16000, np.int16))
    with pytest.raises(OnlookerError, match="unsupported recording: samples of type bool"):
        to_mono_16k(16000, np.ones(16000, bool))


@pytest.mark.parametrize(
    ("reply", "message"),
    [("", "no speech heard"), (ValueError("audio encoder exploded"), "speech recognition failed: audio encoder")],
)
def test_backend_failures_are_user_fit_errors(spoken, reply, message):
    transcriber, _ = find_transcriber(None, FakeBackend(reply))
    with pytest.raises(OnlookerError, match=message):
        transcriber.transcribe(spoken.sample_rate, spoken.samples)


@needs_faster_whisper
def test_no_stt_model_says_how_to_get_one():
    transcriber, reason = find_transcriber(None, object())
    assert transcriber is None
    for hint in ("--stt-model", "ONLOOKER_STT_MODEL", "small", "download_model('small')", "hf download"):
        assert hint in reason
    assert "\n" not in reason


@needs_faster_whisper
def test_a_missing_model_folder_is_named(tmp_path):
    missing = tmp_path / "whisper-small"
    transcriber, reason = find_transcriber(str(missing))
    assert transcriber is None
    assert reason == f"Speech input is off: the faster-whisper model folder {missing} does not exist."


@needs_faster_whisper
def test_a_folder_without_a_model_gives_the_loader_error_on_one_line(tmp_path):
    transcriber, reason = find_transcriber(str(tmp_path))
    assert transcriber is None
    assert reason.startswith("Speech input is off: cannot load faster-whisper model") and "model.bin" in reason
    assert "\n" not in reason


@needs_faster_whisper
def test_a_model_name_missing_from_the_cache_says_how_to_download_it(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    transcriber, reason = find_transcriber("small")
    assert transcriber is None
    assert "'small' is not in this machine's Hugging Face cache" in reason and "download_model" in reason
    assert "local_files_only" not in reason  # huggingface_hub's own advice does not apply to users


def test_without_faster_whisper_the_reason_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "faster_whisper" else real(name, *args)

    monkeypatch.setattr(stt.importlib.util, "find_spec", find_spec)
    transcriber, reason = find_transcriber("small")
    assert transcriber is None and "pip install faster-whisper" in reason
