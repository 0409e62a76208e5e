"""Speech: sentence splitting of streamed text, espeak-ng output, and speech that starts per sentence."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.prompts import Voice
from pipeline.speech.espeak import EspeakEngine, parse_wav
from pipeline.speech.sentences import SentenceSplitter


def test_sentences_complete_across_deltas():
    splitter = SentenceSplitter()
    assert splitter.feed("The ball is lo") == []
    assert splitter.feed("ose! The keeper") == ["The ball is loose!"]
    assert splitter.feed(" dives at 3.5 metres. What") == ["The keeper dives at 3.5 metres."]
    assert splitter.feed("? ... ") == ["What?"]
    assert splitter.flush() == ""
    assert splitter.feed("No final stop") == [] and splitter.flush() == "No final stop"


def test_espeak_speaks_real_audio_at_its_rate():
    engine = EspeakEngine()
    short = engine.synthesize("Goal.", Voice())
    long = engine.synthesize("A long ball over the top, and the striker is through on goal.", Voice())
    assert short.sample_rate == 22050 and short.samples.dtype == np.int16
    assert 0.2 < short.seconds < 2.0 and 2.0 < long.seconds < 8.0
    assert np.abs(long.samples.astype(np.int32)).max() > 1000
    faster = engine.synthesize("A long ball over the top, and the striker is through on goal.", Voice(rate=300))
    assert faster.seconds < long.seconds


def test_broken_wav_is_a_clear_error():
    from pipeline.errors import OnlookerError

    with pytest.raises(OnlookerError, match="did not produce WAV"):
        parse_wav(b"not a wav")
