"""The commentary loop on real decoded video, with a scripted backend (a named test double)
so the content and timing of replies are known and the loop's own decisions can be checked."""

from __future__ import annotations

import threading

import pytest
from media import Segment, write_video
from scripted_backend import ScriptedBackend

from pipeline.commentator import suppression_reason
from pipeline.config import Tuning, load_presets
from pipeline.events import (
    CommentaryDelta,
    CommentaryFinished,
    CommentaryStarted,
    ErrorEvent,
    Event,
    Metrics,
    ModeChanged,
    SceneCut,
)
from pipeline.prompts import load_profiles
from pipeline.session import Session
from pipeline.sources.file import FileSource

SPEED = 4.0  # replay 4x faster than real time; all decisions use media time


@pytest.fixture(scope="module")
def still_moving_still(media_dir):
    return write_video(media_dir / "smm.mp4", [Segment(3, 5), Segment(4, 5, moving=True), Segment(5, 5)])


@pytest.fixture(scope="module")
def still_video(media_dir):
    return write_video(media_dir / "still.mp4", [Segment(8, 6)], fps=10)


def run_session(path, backend, tuning: Tuning | None = None, profile: str = "narrator", during=None) -> list[Event]:
    session = Session(backend, load_profiles()[profile], tuning or Tuning())
    sub = session.bus.subscribe("test", maxsize=100_000)
    session.start(FileSource(path, rate=SPEED))
    if during is not None:
        during(session)
    assert session.wait(60), "the session did not end at the end of the file"
    session.stop()
    assert not session.source.running and not session.commentator.running
    return list(sub)


def of(events: list[Event], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def test_modes_follow_still_and_moving_stretches(still_moving_still):
    tuning = Tuning(idle_after=2.0)
    events = run_session(still_moving_still, ScriptedBackend(), tuning)
    modes = [(round(e.t, 2), e.mode) for e in of(events, ModeChanged)]
    assert [m for _, m in modes] == ["active", "idle"], modes
    assert 3.0 <= modes[0][0] <= 3.5  # motion starts at 3 s
    # motion stops at 7 s; the smoothed motion level takes under a second to fall, then idle_after 2 s
    assert 7.0 + 2.0 <= modes[1][0] <= 7.0 + 2.0 + 1.0


def test_more_talk_while_moving_and_none_while_still_without_heartbeat(still_moving_still):
    tuning = Tuning(active_interval=1.0, min_interval=0.5, heartbeat=0, idle_after=1.0)
    events = run_session(still_moving_still, ScriptedBackend(), tuning)
    starts = of(events, CommentaryStarted)
    assert starts[0].trigger == "start" and starts[0].t < 0.2
    later = starts[1:]
    assert later and all(s.trigger == "active" for s in later)
    assert all(3.0 <= s.t <= 8.1 for s in later), [(s.t, s.trigger) for s in later]
    assert len(later) >= 3


def test_heartbeat_while_idle_and_sentry_stays_silent(still_video):
    events = run_session(still_video, ScriptedBackend(), Tuning(heartbeat=2.0))
    beats = [s for s in of(events, CommentaryStarted) if s.trigger == "heartbeat"]
    assert len(beats) == 3  # at ~2, 4 and 6 s of an 8 s clip
    sentry = load_presets().presets["sentry"]
    events = run_session(still_video, ScriptedBackend(), sentry)
    assert [s.trigger for s in of(events, CommentaryStarted)] == ["start"]


def test_a_cut_triggers_a_comment_about_the_new_scene_at_once(story_video):
    tuning = Tuning(active_interval=30, heartbeat=0)
    backend = ScriptedBackend()
    events = run_session(story_video, backend, tuning)
    cuts = [e.t for e in of(events, SceneCut)]
    assert cuts == pytest.approx([8.0, 10.0], abs=0.1)
    cut_comments = [s for s in of(events, CommentaryStarted) if s.trigger == "scene_cut"]
    assert [round(s.t, 1) for s in cut_comments] == [round(t, 1) for t in cuts]
    # frames sent for a cut comment all come from after the cut
    for request in backend.requests:
        if request.trigger == "scene_cut":
            assert min(f.media_time for f in request.frames) >= request.frames[-1].media_time - 0.01
            assert "scene just changed" in request.prompt.user


def test_suppression_context_and_streamed_deltas(still_video):
    replies = ["...", "", "A red door opens slowly.", "A red door opens slowly!", "The hallway is empty now."]
    backend = ScriptedBackend(replies)
    events = run_session(still_video, backend, Tuning(heartbeat=1.2, min_interval=0.5))
    ends = of(events, CommentaryFinished)[:5]
    assert [e.suppressed for e in ends] == ["nothing_new", "empty", "", "duplicate", ""]
    # only kept comments are carried into later prompts
    assert "A red door opens slowly." in backend.requests[4].prompt.user
    assert "..." not in backend.requests[4].prompt.user.split("already said")[-1].split("\n- ")[1:]
    for end in ends:
        deltas = "".join(d.text for d in of(events, CommentaryDelta) if d.comment_id == end.comment_id)
        assert deltas.strip() == (end.text if end.suppressed not in ("nothing_new", "empty") else "")
    metrics = of(events, Metrics)
    assert len(metrics) == len(of(events, CommentaryStarted))
    assert {"window_ms", "prompt_ms", "first_delta_ms", "model_ttft_ms", "overhead_ms", "total_ms"} <= set(
        metrics[2].stages
    )


def test_live_instructions_reach_the_next_prompt(still_video):
    backend = ScriptedBackend()

    def instruct(session: Session) -> None:
        assert backend.streaming.wait(10)
        session.commentator.add_instruction("  focus on   the goalkeeper ")

    run_session(still_video, backend, Tuning(heartbeat=1.0, min_interval=0.5), during=instruct)
    prompts = [r.prompt.user for r in backend.requests]
    assert "focus on the goalkeeper" not in prompts[0]
    assert "focus on the goalkeeper" in prompts[-1]


def test_one_backend_error_is_reported_and_commentary_goes_on(still_video):
    backend = ScriptedBackend([RuntimeError("GPU hiccup"), "Fine again."])
    events = run_session(still_video, backend, Tuning(heartbeat=1.0, min_interval=0.5))
    errors = of(events, ErrorEvent)
    assert len(errors) == 1 and "GPU hiccup" in errors[0].message and not errors[0].fatal
    assert of(events, CommentaryFinished)[1].text == "Fine again."


def test_repeated_backend_errors_end_the_session_with_the_reason(still_video):
    backend = ScriptedBackend([RuntimeError("out of memory")] * 5)
    session = Session(backend, load_profiles()["narrator"], Tuning(heartbeat=1.0, min_interval=0.5))
    sub = session.bus.subscribe("test")
    session.start(FileSource(still_video, rate=SPEED))
    assert session.wait(30)
    session.stop()
    events = list(sub)
    assert of(events, ErrorEvent)[-1].fatal
    assert "out of memory" in session.error and "giving up" in session.error


def test_stop_cancels_generation_in_flight_and_leaves_no_thread(story_video):
    backend = ScriptedBackend(["one two three four five six"])
    backend.gate = threading.Event()  # never opened: the backend blocks mid-comment
    session = Session(backend, load_profiles()["narrator"], Tuning())
    sub = session.bus.subscribe("test")
    session.start(FileSource(story_video, rate=SPEED))
    assert backend.streaming.wait(10)
    session.stop(timeout=5)
    assert not session.commentator.running and not session.source.running
    assert backend.requests[0].cancel.is_set()
    names = {t.name for t in threading.enumerate()}
    assert "commentator" not in names and "source-file" not in names
    assert of(list(sub), CommentaryFinished)[-1].suppressed == "cancelled"


@pytest.mark.parametrize(
    ("text", "recent", "reason"),
    [
        ("  ", [], "empty"),
        ("...", [], "nothing_new"),
        ("…", [], "nothing_new"),
        ("A cat sits.", ["a cat sits"], "duplicate"),
        ("A cat sits on the mat.", ["A cat sits on a mat."], "duplicate"),
        ("A dog barks.", ["A cat sits."], ""),
    ],
)
def test_suppression_reasons(text, recent, reason):
    assert suppression_reason(text, recent, 0.85) == reason
