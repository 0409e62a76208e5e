"""The commentary loop on real decoded video, with a scripted backend (a named test double)
so the content and timing of replies are known and the loop's own decisions can be checked."""

from __future__ import annotations

import threading

import pytest

from pipeline.commentator import suppression_reason
from pipeline.config import Tuning, load_presets
from pipeline.events import (
    CommentaryDelta,
    CommentaryFinished,
    CommentaryStarted,
    ErrorEvent,
    Metrics,
    ModeChanged,
    SceneCut,
)
from pipeline.session import Session
from pipeline.sources.file import FileSource
from tests.helpers.media import Segment, write_video
from tests.helpers.scripted_backend import ScriptedBackend
from tests.helpers.session_run import SPEED, one_camera, run_session


@pytest.fixture(scope="module")
def still_moving_still(media_dir):
    return write_video(media_dir / "smm.mp4", [Segment(3, 5), Segment(4, 5, moving=True), Segment(5, 5)])


@pytest.fixture(scope="module")
def still_video(media_dir):
    return write_video(media_dir / "still.mp4", [Segment(8, 6)], fps=10)


def test_modes_follow_still_and_moving_stretches(still_moving_still):
    tuning = Tuning(idle_after=2.0)
    run = run_session(ScriptedBackend(), still_moving_still, tuning=tuning)
    modes = [(round(e.t, 2), e.mode) for e in run.of(ModeChanged)]
    assert [m for _, m in modes] == ["active", "idle"], modes
    assert 3.0 <= modes[0][0] <= 3.5  # motion starts at 3 s
    # motion stops at 7 s; the smoothed motion level takes under a second to fall, then idle_after 2 s
    assert 7.0 + 2.0 <= modes[1][0] <= 7.0 + 2.0 + 1.0


def test_more_talk_while_moving_and_none_while_still_without_heartbeat(still_moving_still):
    tuning = Tuning(active_interval=1.0, min_interval=0.5, heartbeat=0, idle_after=1.0)
    run = run_session(ScriptedBackend(), still_moving_still, tuning=tuning)
    starts = run.of(CommentaryStarted)
    assert starts[0].trigger == "start" and starts[0].t < 0.2
    later = starts[1:]
    assert later and all(s.trigger == "active" for s in later)
    assert all(3.0 <= s.t <= 8.1 for s in later), [(s.t, s.trigger) for s in later]
    assert len(later) >= 3


def test_heartbeat_while_idle_and_sentry_stays_silent(still_video):
    run = run_session(ScriptedBackend(), still_video, tuning=Tuning(heartbeat=2.0))
    beats = [s for s in run.of(CommentaryStarted) if s.trigger == "heartbeat"]
    assert len(beats) == 3  # at ~2, 4 and 6 s of an 8 s clip
    sentry = load_presets().presets["sentry"]
    run = run_session(ScriptedBackend(), still_video, tuning=sentry)
    assert [s.trigger for s in run.of(CommentaryStarted)] == ["start"]


def test_a_cut_triggers_a_comment_about_the_new_scene_at_once(story_video):
    tuning = Tuning(active_interval=30, heartbeat=0)
    backend = ScriptedBackend()
    run = run_session(backend, story_video, tuning=tuning)
    cuts = [e.t for e in run.of(SceneCut)]
    assert cuts == pytest.approx([8.0, 10.0], abs=0.1)
    cut_comments = [s for s in run.of(CommentaryStarted) if s.trigger == "scene_cut"]
    assert [round(s.t, 1) for s in cut_comments] == [round(t, 1) for t in cuts]
    # frames sent for a cut comment all come from after the cut
    for request in backend.requests:
        if request.trigger == "scene_cut":
            assert min(f.media_time for f in request.frames) >= request.frames[-1].media_time - 0.01
            assert "scene just changed" in request.prompt.user


def test_suppression_context_and_streamed_deltas(still_video):
    replies = ["...", "", "A red door opens slowly.", "A red door opens slowly!", "The hallway is empty now."]
    backend = ScriptedBackend(replies)
    run = run_session(backend, still_video, tuning=Tuning(heartbeat=1.2, min_interval=0.5))
    ends = run.of(CommentaryFinished)[:5]
    assert [e.suppressed for e in ends] == ["nothing_new", "empty", "", "duplicate", ""]
    # only kept comments are carried into later prompts
    assert "A red door opens slowly." in backend.requests[4].prompt.user
    assert "..." not in backend.requests[4].prompt.user.split("already said")[-1].split("\n- ")[1:]
    for end in ends:
        deltas = "".join(d.text for d in run.of(CommentaryDelta) if d.comment_id == end.comment_id)
        assert deltas.strip() == (end.text if end.suppressed not in ("nothing_new", "empty") else "")
    metrics = run.of(Metrics)
    assert len(metrics) == len(run.of(CommentaryStarted))
    assert {"window_ms", "prompt_ms", "first_delta_ms", "model_ttft_ms", "overhead_ms", "total_ms"} <= set(
        metrics[2].stages
    )


def test_live_instructions_reach_the_next_prompt(still_video):
    backend = ScriptedBackend()

    def instruct(session: Session) -> None:
        assert backend.streaming.wait(10)
        session.commentator.add_instruction("  focus on   the goalkeeper ")

    run_session(backend, still_video, tuning=Tuning(heartbeat=1.0, min_interval=0.5), during=instruct)
    prompts = [r.prompt.user for r in backend.requests]
    assert "focus on the goalkeeper" not in prompts[0]
    assert "focus on the goalkeeper" in prompts[-1]


def test_one_backend_error_is_reported_and_commentary_goes_on(still_video):
    backend = ScriptedBackend([RuntimeError("GPU hiccup"), "Fine again."])
    run = run_session(backend, still_video, tuning=Tuning(heartbeat=1.0, min_interval=0.5))
    errors = run.of(ErrorEvent)
    assert len(errors) == 1 and "GPU hiccup" in errors[0].message and not errors[0].fatal
    assert run.of(CommentaryFinished)[1].text == "Fine again."


def test_repeated_backend_errors_end_the_session_with_the_reason(still_video):
    backend = ScriptedBackend([RuntimeError("out of memory")] * 5)
    run = run_session(backend, still_video, tuning=Tuning(heartbeat=1.0, min_interval=0.5))
    assert run.of(ErrorEvent)[-1].fatal
    assert "out of memory" in run.session.error and "giving up" in run.session.error


def test_stop_cancels_generation_in_flight_and_leaves_no_thread(story_video):
    backend = ScriptedBackend(["one two three four five six"])
    backend.gate = threading.Event()  # never opened: the backend blocks mid-comment
    session = one_camera(backend)
    sub = session.bus.subscribe("test")
    session.start(FileSource(story_video, rate=SPEED))
    assert backend.streaming.wait(10)
    session.stop(timeout=5)
    assert not session.commentator.running and not session.source.running
    assert backend.requests[0].cancel.is_set()
    names = {t.name for t in threading.enumerate()}
    assert "commentator" not in names and "source-file" not in names
    assert [e for e in sub if isinstance(e, CommentaryFinished)][-1].suppressed == "cancelled"


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
