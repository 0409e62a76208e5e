"""Subtitle timing and files: cues from comment events, read back with pysubs2 (a parser that is not ours)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pysubs2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.events import (
    CameraStarted,
    CameraTag,
    CommentaryFinished,
    CommentaryStarted,
    SpeechEnded,
    SpeechSkipped,
    SpeechStarted,
)
from pipeline.recording.subtitles import (
    LINE_CHARS,
    MAX_LINES,
    MAX_UNSPOKEN_S,
    CueFeed,
    SubtitleFiles,
    reading_time,
    split_for_screen,
    srt_time,
)

CAM = CameraTag("door", "Door")
LONG = (
    "A delivery van pulls up by the gate and a man in a yellow jacket carries a large parcel up the path "
    "towards the front door, looks around, and rings the bell twice."
)


def camera_start(speaks: bool) -> CameraStarted:
    return CameraStarted(
        t=0.0, camera=CAM, source="x", kind="file", profile="p", preset="b", instructions="", backend="b", speaks=speaks
    )


def feed_all(tmp_path: Path, speaks: bool, events: list) -> tuple[pysubs2.SSAFile, pysubs2.SSAFile]:
    srt, vtt = tmp_path / "s.srt", tmp_path / "s.vtt"
    feed = CueFeed(lambda _camera, index: SubtitleFiles(srt, vtt) if index == 0 else None)
    for event in [camera_start(speaks), *events]:
        feed.feed(event)
    feed.close()
    return pysubs2.load(str(srt)), pysubs2.load(str(vtt))


def comment(cid: int, t: float, text: str, suppressed: str = "") -> list:
    return [
        CommentaryStarted(t=t, camera=CAM, comment_id=cid, trigger="active", frames=4),
        CommentaryFinished(t=t + 0.4, camera=CAM, comment_id=cid, text=text, suppressed=suppressed),
    ]


def texts(subs: pysubs2.SSAFile) -> list[str]:
    return [line.plaintext.replace("\n", " ") for line in subs]


def test_spoken_comments_run_from_speech_start_to_speech_end(tmp_path: Path) -> None:
    events = [
        *comment(1, 1.0, "A car arrives."),
        SpeechStarted(t=1.0, camera=CAM, comment_id=1, at=1.8, wait_ms=0, behind_s=0.5),
        *comment(2, 3.0, "Duplicate.", suppressed="duplicate"),
        SpeechEnded(t=3.6, camera=CAM, comment_id=1),
        *comment(3, 5.0, "Someone gets out & waves <hello>."),
        SpeechStarted(t=5.0, camera=CAM, comment_id=3, at=5.5, wait_ms=0, behind_s=0.5),
        SpeechEnded(t=8.25, camera=CAM, comment_id=3),
    ]
    srt, vtt = feed_all(tmp_path, True, events)
    for subs in (srt, vtt):
        assert texts(subs)[0] == "A car arrives." and len(subs) == 2  # the suppressed comment is not kept
        assert [(c.start, c.end) for c in subs] == [(1800, 3600), (5500, 8250)]
    assert texts(srt)[1] == "Someone gets out & waves \u2039hello\u203a."  # not a formatting tag to SRT players
    assert "Someone gets out &amp; waves &lt;hello&gt;." in (tmp_path / "s.vtt").read_text()


def test_unspoken_comments_stay_up_for_their_reading_time_and_never_past_the_next(tmp_path: Path) -> None:
    events = [*comment(1, 2.0, "Nothing moves."), *comment(2, 3.0, "A cat walks in."), *comment(3, 40.0, LONG)]
    srt, _ = feed_all(tmp_path, False, events)
    first, second = srt[0], srt[1]
    assert (first.start, first.end) == (2000, 3000)  # cut at the next comment's frames
    assert second.start == 3000 and second.end == 3000 + round(reading_time("A cat walks in.") * 1000)
    long_cues = srt[2:]
    assert long_cues[0].start == 40_000
    assert long_cues[-1].end == 40_000 + round(MAX_UNSPOKEN_S * 1000)  # a heartbeat later does not keep it up


def test_a_comment_whose_speech_was_skipped_is_shown_at_its_frames(tmp_path: Path) -> None:
    events = [*comment(1, 2.0, "Old news."), SpeechSkipped(t=2.0, camera=CAM, comment_id=1, reason="stale")]
    srt, _ = feed_all(tmp_path, True, events)
    assert texts(srt) == ["Old news."] and srt[0].start == 2000


def test_long_comments_are_wrapped_into_screens_of_two_short_lines_in_order(tmp_path: Path) -> None:
    events = [
        *comment(1, 1.0, LONG),
        SpeechStarted(t=1.0, camera=CAM, comment_id=1, at=1.0, wait_ms=0, behind_s=0),
        SpeechEnded(t=9.0, camera=CAM, comment_id=1),
    ]
    srt, _ = feed_all(tmp_path, True, events)
    assert len(srt) >= 2 and " ".join(texts(srt)) == LONG
    for line in srt:
        rows = line.plaintext.split("\n")
        assert len(rows) <= MAX_LINES and all(len(r) <= LINE_CHARS for r in rows)
    assert srt[0].start == 1000 and srt[-1].end == 9000
    assert all(a.end == b.start for a, b in itertools.pairwise(srt))  # the screens follow each other


def test_an_unfinished_comment_at_the_end_is_not_a_subtitle(tmp_path: Path) -> None:
    events = [*comment(1, 1.0, "Done."), CommentaryStarted(t=2.0, camera=CAM, comment_id=2, trigger="active", frames=2)]
    srt, _ = feed_all(tmp_path, False, events)
    assert texts(srt) == ["Done."]


@given(st.text(alphabet=st.sampled_from("ab cdef ghij"), max_size=300))
def test_screens_keep_every_word_within_two_lines(text: str) -> None:
    screens = split_for_screen(text)
    assert " ".join(" ".join(s) for s in screens).split() == text.split()
    assert all(1 <= len(s) <= MAX_LINES for s in screens)


@pytest.mark.parametrize(("seconds", "stamp"), [(0, "00:00:00,000"), (3661.5, "01:01:01,500"), (90000, "25:00:00,000")])
def test_srt_times(seconds: float, stamp: str) -> None:
    assert srt_time(seconds) == stamp  # a session longer than a day keeps counting hours
