"""Speech pacing with the real espeak-ng voice: gaps, overlaps, latency behind the picture.

Plays a generated clip whose scene keeps changing (a moving square, a hard cut every 2-3 s)
through the real pipeline (file source → hub → commentator → OpenCV narrator → speaker with
espeak-ng), with the talkative ``sniper`` preset and the ``sports`` profile, so the commentator
always wants to talk and the speech pacing is the bottleneck.

The speaker's chunks carry ``plays_at`` (``time.monotonic`` playback start), so the bench rebuilds
what a listener hears: voiced stretches (|sample| > 500 in 10 ms frames, pauses under 0.15 s
merged), each given to the comment whose planned start (``frame_wall + behind_s`` of its
``SpeechStarted``) comes last before it. A comment's stretches form one utterance.

Definitions:

* gap: silence a listener hears between two utterances. "Waiting" gaps are those where the next
  comment's audio was handed to the player before the previous one ended (``SpeechStarted.wall``
  before the previous ``SpeechEnded.wall``): only the pacing is in them, not generation.
* wait_ms: first sentence complete → audio handed to the player. For comments whose first
  sentence completed while the player was silent it is the speaker's own latency (synthesis,
  resampling, levelling, chunking); for the others it includes the intended wait behind the
  previous utterance.
* behind_s: newest frame's arrival → planned playback start, per spoken comment.

This measures our side of the wire (what the speaker hands over, and when it is booked to play).
What a listener hears is measured by ``--browser`` (``bench/speech_browser.py``): the app in a real
Chromium, the page's own audio clock against this booking.

Goals: no-wait wait_ms p90 <= 300 ms, waiting gaps p90 <= 400 ms, 0 overlaps, behind_s not
growing (second-half median <= first-half median + 0.5 s).

Where the time goes (2-core CPU machine): espeak-ng gives its first chunk in ~10 ms and a whole
sentence in ~12 ms, so a comment that finds the player silent is handed over in ~15-60 ms. The
gap between utterances is ~0.56 s even when the next comment is waiting: the 0.3 s pause is
counted from the end of the booked audio, and every espeak-ng sentence ends with ~0.25 s of
silence of its own (plus ~10 ms at its start), which the speaker does not trim.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import report, summary

from pipeline.backends.opencv_narrator import OpenCVNarrator
from pipeline.config import load_presets, load_settings
from pipeline.events import (
    CommentaryFinished,
    CommentaryStarted,
    Event,
    SpeechEnded,
    SpeechSkipped,
    SpeechStarted,
)
from pipeline.prompts import Voice, load_profiles
from pipeline.session import Session
from pipeline.sources.file import FileSource
from pipeline.speech.espeak import EspeakEngine
from pipeline.speech.sentences import SentenceSplitter
from pipeline.speech.speaker import AudioOut, SpeechOptions
from tests.helpers.listening import voiced_spans
from tests.helpers.media import Segment, write_video

PAUSE = 0.3
MAX_WAIT = 4.0
LOUD = 500  # |sample| above which a 10 ms frame is voiced
MERGE_GAP = 0.15  # espeak's pauses inside a sentence are shorter than this
SYNTH_SENTENCES = 30
SEGMENT_SECONDS = (2.0, 2.5, 3.0)
GOALS = {
    "wait_ms_no_wait p90": "<= 300 ms (first sentence complete → audio to the player, player silent)",
    "gaps_waiting_s p90": "<= 0.4 s (next comment already waiting)",
    "overlapping_chunks": "== 0",
    "behind_s": "second-half median <= first-half median + 0.5 s (does not grow)",
}


@dataclass(frozen=True)
class Utterance:
    comment_id: int
    start: float  # monotonic, first voiced frame
    end: float  # monotonic, last voiced frame
    longest_inner_pause: float


def build_clip(path: Path, seconds: float) -> Path:
    """Moving segments, each a new scene, 2-3 s long: the scene never settles."""
    segments, total = [], 0.0
    for i in itertools.count():
        length = min(SEGMENT_SECONDS[i % len(SEGMENT_SECONDS)], seconds - total)
        if length <= 0:
            break
        segments.append(Segment(length, i % 7, moving=True))
        total += length
    return write_video(path, segments, fps=25)


def run_session(clip: Path, preset: str, seconds: float) -> tuple[list[Event], list[AudioOut], Voice, float, float]:
    """Events, audio chunks, the voice used, the wall−monotonic offset and gate-vs-timeline drift."""
    backend = OpenCVNarrator.from_settings(load_settings(backend="opencv"))
    tuning = load_presets().presets[preset]
    speech = SpeechOptions(EspeakEngine(), pause=PAUSE, max_wait=MAX_WAIT)
    session = Session(backend, load_profiles()["sports"], tuning, speech=speech)
    assert session.speaker is not None and session.gate is not None
    sub = session.bus.subscribe("bench", maxsize=100_000)
    offset = time.time() - time.monotonic()
    session.start(FileSource(clip))
    try:
        if not session.wait(seconds + 60) or not session.speaker.join(60):
            raise RuntimeError("the session did not finish in time")
        chunks = list(session.speaker.outputs())
        voice = session.speaker.voice()
        gate_until = session.gate.until
    finally:
        session.stop()
        backend.close()
    if session.error:
        raise RuntimeError(session.error)
    timeline_end = max(c.plays_at + len(c.samples) / c.sample_rate for c in chunks) if chunks else gate_until
    return list(sub), chunks, voice, offset, timeline_end - gate_until


def overlapping_chunks(chunks: list[AudioOut]) -> int:
    """Chunks that start before the previous one ends (the player would talk over itself)."""
    pairs = itertools.pairwise(chunks)
    return sum(1 for a, b in pairs if b.plays_at < a.plays_at + len(a.samples) / a.sample_rate - 1e-3)


def utterances(spans: list[tuple[float, float]], starts: list[tuple[int, float]]) -> list[Utterance]:
    """Give each span to the comment planned to start last before it; join a comment's spans."""
    out: list[Utterance] = []
    for start, end in spans:
        owner = max((s for s in starts if s[1] <= start + 0.02), key=lambda s: s[1], default=starts[0])[0]
        if out and out[-1].comment_id == owner:
            last = out[-1]
            out[-1] = Utterance(owner, last.start, end, max(last.longest_inner_pause, start - last.end))
        else:
            out.append(Utterance(owner, start, end, 0.0))
    return out


def edge_silence(samples: np.ndarray, rate: int) -> tuple[float, float]:
    """Seconds of silence espeak puts before and after the voice (they add to every gap)."""
    frame = rate // 100
    loud = np.flatnonzero(
        np.abs(samples[: len(samples) // frame * frame].astype(np.int32)).reshape(-1, frame).max(1) > LOUD
    )
    if not len(loud):
        return len(samples) / rate, 0.0
    return loud[0] / 100, len(samples) / rate - (loud[-1] + 1) / 100


def synthesis(engine: EspeakEngine, sentences: list[str], voice: Voice) -> dict:
    """espeak-ng alone: time to its first chunk and to the end, plus its built-in edge silences."""
    first, total, audio, lead, trail = [], [], [], [], []
    for sentence in sentences:
        begin = time.perf_counter()
        chunks = []
        for chunk in engine.stream(sentence, voice):
            if not chunks:
                first.append((time.perf_counter() - begin) * 1000)
            chunks.append(chunk)
        total.append((time.perf_counter() - begin) * 1000)
        samples = np.concatenate([c.samples for c in chunks])
        audio.append(len(samples) / chunks[0].sample_rate)
        before, after = edge_silence(samples, chunks[0].sample_rate)
        lead.append(before * 1000)
        trail.append(after * 1000)
    return {
        "sentences": len(sentences),
        "first_chunk_ms": summary(first),
        "complete_ms": summary(total),
        "audio_s": summary(audio),
        "leading_silence_ms": summary(lead),
        "trailing_silence_ms": summary(trail),
    }


def said_sentences(events: list[Event], spoken: set[int]) -> list[str]:
    """Up to 30 sentences the narrator actually said, distinct first, repeated if there are fewer."""
    found: list[str] = []
    for e in events:
        if isinstance(e, CommentaryFinished) and e.comment_id in spoken:
            splitter = SentenceSplitter()
            found += splitter.feed(e.text + " ")
    distinct = list(dict.fromkeys(found))
    return list(itertools.islice(itertools.cycle(distinct), SYNTH_SENTENCES)) if distinct else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the clip")
    parser.add_argument("--preset", default="sniper", help="preset from presets.yaml")
    parser.add_argument(
        "--browser", action="store_true", help="measure at the listener: the app in Chromium (bench/speech_browser.py)"
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="--browser: how long to listen")
    parser.add_argument("--tabs", type=int, default=1, help="--browser: tabs listening at once in one browser profile")
    args = parser.parse_args()
    if args.browser:
        from speech_browser import run

        run(args.minutes, args.tabs)
        return
    with tempfile.TemporaryDirectory() as tmp:
        clip = build_clip(Path(tmp) / "changing.mp4", args.seconds)
        events, chunks, voice, offset, drift = run_session(clip, args.preset, args.seconds)

    generated = {e.comment_id: e for e in events if isinstance(e, CommentaryStarted)}
    finished = [e for e in events if isinstance(e, CommentaryFinished)]
    started = [e for e in events if isinstance(e, SpeechStarted)]
    ended = {e.comment_id: e.wall for e in events if isinstance(e, SpeechEnded)}
    skipped = [e for e in events if isinstance(e, SpeechSkipped)]

    # wait_ms, split by whether the player was silent when the first sentence was complete
    no_wait, prev = [], None
    for s in started:
        ready = s.wall - s.wait_ms / 1000
        if prev is None or ready >= ended.get(prev.comment_id, 0.0):
            no_wait.append(s.wait_ms)
        prev = s

    # the listener's timeline
    starts = [
        (s.comment_id, generated[s.comment_id].frame_wall + s.behind_s - offset)
        for s in started
        if generated[s.comment_id].frame_wall
    ]
    spans = voiced_spans(chunks, LOUD, MERGE_GAP) if chunks else []
    heard = utterances(spans, starts) if spans and starts else []
    started_at = {s.comment_id: s.wall for s in started}
    gaps, waiting_gaps = [], []
    for a, b in itertools.pairwise(heard):
        gaps.append(b.start - a.end)
        if started_at.get(b.comment_id, 1e18) < ended.get(a.comment_id, 0.0):
            waiting_gaps.append(b.start - a.end)
    behind = [s.behind_s for s in started]
    half = len(behind) // 2
    trend = {
        "first_half_median": round(statistics.median(behind[:half]), 3) if half else None,
        "second_half_median": round(statistics.median(behind[half:]), 3) if behind[half:] else None,
    }
    voiced = sum(end - start for start, end in spans)
    sentences = said_sentences(events, set(started_at))
    synth = synthesis(EspeakEngine(), sentences, voice) if sentences else {"sentences": 0}

    overlaps = overlapping_chunks(chunks)
    no_wait_sum, waiting_sum = summary(no_wait), summary(waiting_gaps)
    passed = {
        "wait_ms_no_wait": bool(no_wait) and no_wait_sum["p90"] <= 300,
        "gaps_waiting": bool(waiting_gaps) and waiting_sum["p90"] <= 0.4,
        "no_overlaps": overlaps == 0,
        "behind_not_growing": None not in trend.values()
        and bool(trend["second_half_median"] <= trend["first_half_median"] + 0.5),
    }
    results = {
        "clip_s": args.seconds,
        "preset": args.preset,
        "voice": voice.model_dump(include={"engine_voice", "rate", "pitch"}),
        "comments_generated": len(generated),
        "comments_suppressed": dict(Counter(e.suppressed for e in finished if e.suppressed)),
        "comments_spoken": len(started),
        "speech_skipped": dict(Counter(e.reason for e in skipped)),
        "spoken_in_part": len(set(started_at) & {e.comment_id for e in skipped}),
        "wait_ms_no_wait (player silent)": no_wait_sum,
        "wait_ms_all": summary([s.wait_ms for s in started]),
        "synthesis_alone": synth,
        "utterances_heard": len(heard),
        "gaps_all_s": summary(gaps),
        "gaps_waiting_s (next was ready)": waiting_sum,
        "longest_pause_inside_utterance_s": round(max((u.longest_inner_pause for u in heard), default=0.0), 3),
        "overlapping_chunks": overlaps,
        "chunks": len(chunks),
        "timeline_end_minus_gate_s": round(drift, 3),
        "behind_s": summary(behind),
        "behind_s_trend": trend,
        "speech_s_per_minute": round(voiced / args.seconds * 60, 1),
        "pass": passed,
    }
    report("speech", results, GOALS)


if __name__ == "__main__":
    main()
