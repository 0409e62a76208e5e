"""Speech pacing: the speaker and the audio gate, with a tone engine of known durations.

The speaker is driven with real threads and the real clock; its output chunks carry where on the
timeline they play (here the timeline is ``time.monotonic``), so the tests rebuild what a listener
hears and measure it: utterances never overlap, they are a breathing pause apart, speech starts
after the first sentence, and stale comments are never heard.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from pipeline.config import load_presets
from pipeline.events import (
    CommentaryDelta,
    CommentaryFinished,
    CommentaryStarted,
    Event,
    EventBus,
    SceneCut,
    SpeechEnded,
    SpeechSkipped,
    SpeechStarted,
    Subscription,
)
from pipeline.prompts import Voice
from pipeline.speech.audio import OUTPUT_RATE, ChunkBuffer, LevelKeeper, trim_silence
from pipeline.speech.gate import COMMIT_AHEAD, SpeechGate
from pipeline.speech.sentences import end_at_sentence
from pipeline.speech.speaker import SENTENCE_PAUSE, AudioOut, Speaker, SpeechOptions
from tests.helpers.listening import voiced_spans
from tests.helpers.media import Segment, write_video
from tests.helpers.scripted_backend import ScriptedBackend
from tests.helpers.session_run import run_session
from tests.helpers.tone_engine import ToneEngine

PAUSE = 0.3


@dataclass
class Rig:
    bus: EventBus
    gate: SpeechGate
    engine: ToneEngine
    speaker: Speaker

    events: Subscription

    def say(self, comment_id: int, t: float, *deltas: str, suppressed: str = "", finish: bool = True) -> None:
        """Publish a comment as the commentator would: start, deltas, end."""
        self.bus.publish(CommentaryStarted(t=t, comment_id=comment_id, trigger="active", frames=1))
        for delta in deltas:
            self.bus.publish(CommentaryDelta(t=t, comment_id=comment_id, text=delta))
        if finish:
            text = "".join(deltas)
            self.bus.publish(CommentaryFinished(t=t, comment_id=comment_id, text=text, suppressed=suppressed))

    def wait_for(self, kind: type[Event], comment_id: int, timeout: float = 10.0) -> list[Event]:
        """Events up to and including ``kind`` for ``comment_id`` (the speaker works in real time)."""
        seen = []
        deadline = time.monotonic() + timeout
        while (event := self.events.get(timeout=max(deadline - time.monotonic(), 0))) is not None:
            seen.append(event)
            if isinstance(event, kind) and getattr(event, "comment_id", None) == comment_id:
                return seen
        raise AssertionError(f"no {kind.__name__} for comment {comment_id} within {timeout} s: {seen}")

    def finish(self) -> list[AudioOut]:
        """Let the speaker say what is left and end; everything it handed out, in order."""
        self.speaker.finish()
        chunks = list(self.speaker.outputs())
        assert self.speaker.join(5)
        return chunks


@pytest.fixture
def rig() -> Iterator[Rig]:
    bus = EventBus()
    gate = SpeechGate(PAUSE)
    engine = ToneEngine(seconds_per_word=0.2)
    speaker = Speaker(bus, gate, SpeechOptions(engine, pause=PAUSE, max_wait=4.0), Voice, lambda: 0.0)
    events = bus.subscribe("test", maxsize=10_000)
    speaker.start()
    yield Rig(bus, gate, engine, speaker, events)
    speaker.stop()


def assert_no_overlap(chunks: list[AudioOut]) -> None:
    for before, after in itertools.pairwise(chunks):
        assert after.plays_at >= before.plays_at + len(before.samples) / OUTPUT_RATE - 1e-3, (before, after)


def test_speech_starts_after_the_first_sentence_not_the_whole_comment(rig: Rig) -> None:
    rig.say(1, 1.0, "One two three. Four fi", finish=False)
    first = rig.speaker.take(timeout=5)  # the comment is still streaming
    assert first is not None and first.sample_rate == OUTPUT_RATE
    assert abs(len(first.samples) / OUTPUT_RATE - 0.6) < 0.05  # exactly the first sentence (3 words)
    assert rig.engine.spoken == ["One two three."]
    rig.bus.publish(CommentaryDelta(t=1.0, comment_id=1, text="ve six"))
    rig.bus.publish(CommentaryFinished(t=1.0, comment_id=1, text="One two three. Four five six"))
    rest = rig.finish()
    assert rig.engine.spoken == ["One two three.", "Four five six"]
    assert_no_overlap([first, *rest])
    (_, end), (start, _) = voiced_spans([first, *rest])  # the sentences follow each other at once,
    assert abs(start - end - SENTENCE_PAUSE) <= 0.02  # with the short pause between sentences


def test_comments_never_overlap_and_are_a_breathing_pause_apart(rig: Rig) -> None:
    rig.say(1, 1.0, "one two three four five six seven.")  # 1.4 s
    rig.say(2, 2.0, "eight nine ten.")  # ready at once: must wait for the first to end
    rig.say(3, 3.0, "eleven twelve.")
    seen = rig.wait_for(SpeechEnded, 3)
    chunks = rig.finish()
    assert_no_overlap(chunks)
    spans = voiced_spans(chunks)
    assert [round(b - a, 1) for a, b in spans] == [1.4, 0.6, 0.4]
    gaps = [after[0] - before[1] for before, after in itertools.pairwise(spans)]
    assert all(abs(gap - PAUSE) <= 0.03 for gap in gaps), gaps
    started = {e.comment_id: e for e in seen if isinstance(e, SpeechStarted)}
    ended = {e.comment_id: e for e in seen if isinstance(e, SpeechEnded)}
    assert list(started) == [1, 2, 3] and list(ended) == [1, 2, 3]
    # Comment 2 is handed over shortly before comment 1 ends, not as soon as it was ready.
    assert started[2].wall - started[1].wall >= 1.4 - COMMIT_AHEAD - 0.1


def test_chunks_are_a_steady_second_long(rig: Rig) -> None:
    rig.say(1, 1.0, " ".join(["word"] * 17) + ".")  # 3.4 s
    chunks = rig.finish()
    assert [len(c.samples) for c in chunks[:-1]] == [OUTPUT_RATE] * 3
    assert 0 < len(chunks[-1].samples) <= OUTPUT_RATE


def test_a_comment_from_before_a_scene_cut_is_dropped_unheard(rig: Rig) -> None:
    rig.say(1, 1.0, "one two three four five six seven eight nine ten.")  # 2 s: comment 2 has to wait
    rig.say(2, 5.0, "about the old scene.")
    rig.bus.publish(SceneCut(t=6.0, score=0.9))
    skipped = rig.wait_for(SpeechSkipped, 2)[-1]
    assert skipped.reason == "stale: the scene changed before it could be spoken"
    rig.wait_for(SpeechEnded, 1)
    assert [round(b - a, 1) for a, b in voiced_spans(rig.finish())] == [2.0]


def test_a_comment_that_waited_too_long_is_dropped(rig: Rig) -> None:
    rig.speaker.max_wait = 0.5
    rig.say(1, 1.0, "one two three four five six seven eight nine ten.")  # 2 s: comment 2 waits ~1.5 s
    rig.say(2, 2.0, "too late now.")
    assert rig.wait_for(SpeechSkipped, 2)[-1].reason == "stale: waited more than 0.5 s to be spoken"
    assert len(voiced_spans(rig.finish())) == 1


def test_suppressed_comments_lose_their_unspoken_rest(rig: Rig) -> None:
    rig.say(1, 1.0, "Same as before. And", suppressed="duplicate")
    rig.say(2, 2.0, "...", suppressed="nothing_new")
    rig.finish()
    assert rig.engine.spoken == ["Same as before."]  # spoken while it streamed; "And" never


def test_muting_releases_the_gate_and_stops_the_audio(rig: Rig) -> None:
    rig.gate.expect(1)
    rig.say(1, 1.0, "one two three four five six seven eight nine ten. And", finish=False)
    assert rig.speaker.take(timeout=5) is not None
    assert not rig.gate.is_open()
    rig.speaker.set_muted(True)
    assert rig.gate.is_open()
    rig.bus.publish(CommentaryFinished(t=1.0, comment_id=1, text="x"))
    rig.say(2, 2.0, "not while muted.")
    rig.finish()
    assert "not while muted." not in rig.engine.spoken


def test_the_gate_opens_only_when_speech_is_about_to_end() -> None:
    now = [100.0]
    gate = SpeechGate(PAUSE, clock=lambda: now[0])
    assert gate.is_open() and gate.pause_needed() == 0.0  # nothing said yet: no pause either
    gate.expect(1)
    assert not gate.is_open()  # comment 1 is still being generated / synthesised
    gate.settle(1)
    assert gate.book(3.0) == 100.0 and gate.until == 103.0
    assert not gate.is_open()
    now[0] = 103.0 - COMMIT_AHEAD - gate.lead
    assert gate.is_open()  # the next comment is generated in the background while this one ends
    assert gate.pause_needed() == PAUSE
    now[0] = 103.1
    assert gate.pause_needed() == pytest.approx(PAUSE - 0.1)
    gate.observe_lead(100.0)
    assert gate.lead == 8.0  # capped


def test_one_gain_per_utterance_moving_slowly_between_them() -> None:
    level = LevelKeeper()
    loud = np.sin(np.arange(24000) / 5) * 0.5
    quiet = loud * 0.02
    first = level.observe(quiet)
    assert first == pytest.approx(level.max_gain)  # quiet speech is raised, up to the cap
    after_loud = level.observe(loud)
    assert 0.2 < after_loud < first  # moves toward the loud one's gain, not all the way at once
    assert LevelKeeper.voiced_rms(np.concatenate([loud, np.zeros(24000)])) == pytest.approx(0.5 / np.sqrt(2), 0.01)


def test_engine_padding_is_trimmed_so_the_pauses_are_ours() -> None:
    voice = np.full(2400, 0.5, np.float32)
    padded = np.concatenate([np.zeros(240, np.float32), voice, np.zeros(6000, np.float32)])  # espeak-like
    trimmed = trim_silence(padded)
    assert len(trimmed) == 240 + 2400 + 1200  # 10 ms lead kept whole, 0.25 s tail cut to 50 ms
    assert len(trim_silence(np.zeros(4800, np.float32))) == 0


def test_chunk_buffer_hands_out_exact_chunks() -> None:
    buffer = ChunkBuffer(rate=10, chunk_seconds=1.0)
    assert buffer.add(np.arange(7, dtype=np.int16)) == []
    chunks = buffer.add(np.arange(25, dtype=np.int16))
    assert [len(c) for c in chunks] == [10, 10, 10] and len(buffer) == 2
    assert list(chunks[0]) == [*range(7), 0, 1, 2]
    assert list(buffer.flush()) == [23, 24] and buffer.flush() is None


def test_a_cut_off_comment_ends_at_its_last_whole_sentence() -> None:
    assert end_at_sentence("The keeper dives. The ball goes wide and the") == "The keeper dives."
    assert end_at_sentence("A single unfinished thought") == "A single unfinished thought"
    assert end_at_sentence("Done! ") == "Done!"


def distinct_replies(count: int, words: int) -> list[str]:
    """Replies that share no words, so none is suppressed as a duplicate of another."""
    return [" ".join(f"w{n}x{k}" for k in range(words)) + "." for n in range(count)]


def test_a_session_paces_comments_to_its_speech(tmp_path) -> None:
    """The commentator wants a comment every 0.3 s; speech takes ~1.2 s each: the gate holds it
    back, so nothing overlaps, nothing piles up, and speech stays close behind the picture."""
    video = write_video(tmp_path / "moving.mp4", [Segment(8, 0, moving=True)])
    tuning = load_presets().presets["sniper"].model_copy(update={"min_interval": 0.2, "active_interval": 0.3})
    engine = ToneEngine(seconds_per_word=0.4)
    backend = ScriptedBackend(distinct_replies(100, words=3))
    speech = SpeechOptions(engine, pause=PAUSE, max_wait=4.0)
    run = run_session(backend, video, speed=1.0, profile="sports", tuning=tuning, speech=speech)
    assert run.session.speaker is not None
    chunks = list(run.session.speaker.outputs())
    seen = run.events
    started = [e for e in seen if isinstance(e, CommentaryStarted)]
    spoken = [e for e in seen if isinstance(e, SpeechStarted)]
    skipped = [e for e in seen if isinstance(e, SpeechSkipped)]
    assert 4 <= len(started) <= 9, len(started)  # ungated it would be ~25 in 8 s
    assert len(spoken) >= len(started) - 1 and len(skipped) <= 1
    assert_no_overlap(chunks)
    spans = voiced_spans(chunks)
    gaps = [after[0] - before[1] for before, after in itertools.pairwise(spans)]
    assert min(gaps) >= PAUSE - 0.03, gaps
    assert max(e.behind_s for e in spoken) < 3.0, [e.behind_s for e in spoken]


def test_the_models_own_voice_is_resampled_and_spoken(tmp_path) -> None:
    video = write_video(tmp_path / "moving.mp4", [Segment(2, 0, moving=True)])
    backend = ScriptedBackend(["one two three four five."], voice_rate=16_000)
    tuning = load_presets().presets["balanced"]
    run = run_session(backend, video, speed=1.0, tuning=tuning, speech=SpeechOptions(None, pause=PAUSE))
    assert run.session.speaker is not None
    chunks = list(run.session.speaker.outputs())
    assert chunks and all(c.sample_rate == OUTPUT_RATE for c in chunks)
    first = voiced_spans(chunks)[0]
    assert abs((first[1] - first[0]) - 0.5) < 0.05  # five words × 0.1 s of the backend's own audio
