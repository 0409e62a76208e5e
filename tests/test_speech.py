"""Speech: sentence splitting of streamed text, espeak-ng output, and speech that starts per sentence."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.config import load_settings
from pipeline.events import CommentaryDelta, CommentaryFinished, CommentaryStarted, EventBus
from pipeline.prompts import Voice, load_profiles
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


def test_speech_starts_after_the_first_sentence_not_the_whole_comment(tmp_path, monkeypatch):
    from scripted_backend import ScriptedBackend

    from pipeline.backends.base import Choice
    from pipeline.config import load_presets
    from webui.sessions import SessionManager

    monkeypatch.chdir(tmp_path)
    profiles = load_profiles()
    manager = SessionManager(load_settings(tts="espeak"), Choice(ScriptedBackend(), "t"), load_presets(), profiles)
    bus = EventBus()
    viewer = SimpleNamespace(speech=bus.subscribe("speech"), profile=profiles["sports"])
    chunks = manager.speech_chunks(viewer)
    bus.publish(CommentaryStarted(t=1, comment_id=1, trigger="active", frames=1))
    bus.publish(CommentaryDelta(t=1, comment_id=1, text="The ball is loose. The keep"))
    first_rate, first = next(chunks)  # spoken while the comment is still streaming
    bus.publish(CommentaryDelta(t=1, comment_id=1, text="er dives"))
    bus.publish(CommentaryFinished(t=1, comment_id=1, text="The ball is loose. The keeper dives"))
    _, second = next(chunks)
    bus.publish(CommentaryStarted(t=2, comment_id=2, trigger="active", frames=1))
    bus.publish(CommentaryDelta(t=2, comment_id=2, text="Same as before"))
    bus.publish(CommentaryFinished(t=2, comment_id=2, text="Same as before", suppressed="duplicate"))
    bus.close()
    assert list(chunks) == []  # the suppressed comment's unspoken rest is dropped
    assert first_rate == 22050 and len(first) > 0 and len(second) > 0
