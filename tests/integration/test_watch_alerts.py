"""Watch rules in running sessions on real decoded video: when checks are asked, how verdicts become
alerts (confirmation, cooldown, clearing, no verdict), the snapshot and clip kept with the recording, the
offline narrator's vocabulary on videos with motion in known places at known times, the CLI."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from pipeline.backends.opencv_narrator import OpenCVNarrator
from pipeline.config import Tuning
from pipeline.events import Alert, AlertClip, CommentaryFinished, ErrorEvent, RuleCheck
from pipeline.recording.history import HistoryIndex
from pipeline.recording.recorder import Recorder
from tests.helpers.checking_backend import NO, CheckingBackend, yes
from tests.helpers.media import Segment, write_video
from tests.helpers.session_run import one_camera, play, watch_desk

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """Still 0-3 s, a square pacing on the left 3-6 s, still 6-8 s, pacing on the right 8-11 s, still to 13 s;
    and 12 s of a still picture with no event at all."""
    folder = tmp_path_factory.mktemp("watch")
    left_then_right = [
        Segment(3, 1),
        Segment(3, 1, True, (0.0, 0.33)),
        Segment(2, 1),
        Segment(3, 1, True, (0.67, 1.0)),
        Segment(2, 1),
    ]
    return {
        "left_then_right": write_video(folder / "left-then-right.mp4", left_then_right),
        "still": write_video(folder / "still.mp4", [Segment(12, 2)]),
    }


def test_the_narrator_alerts_each_region_when_its_motion_starts_and_never_on_a_still_clip(videos):
    narrator = OpenCVNarrator()
    desk = watch_desk(narrator, "left=motion on the left", "right=motion on the right", interval=5.0)
    run = play(one_camera(narrator, watch=desk), videos["left_then_right"])
    started = {a.rule: a.t for a in run.of(Alert) if a.state == "started"}
    assert set(started) == {"left", "right"}
    assert 3.0 <= started["left"] <= 4.5, started
    assert 8.0 <= started["right"] <= 9.5, started
    cleared = [a for a in run.of(Alert) if a.state == "cleared" and a.rule == "left"]
    assert cleared and cleared[0].t <= 8.5, "the left alert clears soon after its motion stopped (6 s)"
    checks = run.of(RuleCheck)
    assert all(c.answer in ("yes", "no") for c in checks)  # the narrator always has a verdict
    assert {c.trigger for c in checks} >= {"start", "motion"}
    assert run.of(CommentaryFinished), "commentary goes on beside the checks"

    quiet = OpenCVNarrator()
    run = play(one_camera(quiet, watch=watch_desk(quiet, "motion", "someone", interval=2.0)), videos["still"])
    assert not run.of(Alert), "no false alert on a clip with no event"
    assert len([c for c in run.of(RuleCheck) if c.trigger == "interval"]) >= 4, "a still picture is checked too"


def test_confirmation_no_verdict_and_clearing_from_scripted_answers(videos):
    answers = [NO, yes(), "garbage, not JSON", yes(), NO, yes(), NO, yes(0.3)]  # yes(0.3): under min_confidence
    backend = CheckingBackend(answers)
    desk = watch_desk(backend, "door=a person at the door", confirm=2, clear=2, cooldown=0, interval=1.0)
    run = play(one_camera(backend, watch=desk), videos["still"])
    checks = run.of(RuleCheck)[: len(answers)]
    assert [c.answer for c in checks] == ["no", "yes", "none", "yes", "no", "yes", "no", "yes"]
    assert "not the JSON asked for" in checks[2].reason
    alerts = [(a.state, a.t) for a in run.of(Alert)]
    assert alerts[0] == ("started", checks[3].t), "two yes in a row (no verdict between does not break them)"
    assert alerts[1] == ("cleared", checks[7].t), "two no in a row (a yes under the confidence bar is a no)"
    assert all(not isinstance(e, ErrorEvent) for e in run.events)


def test_a_cooldown_holds_back_an_alert_that_comes_again_too_soon(videos):
    answers = [yes(), NO, yes(), yes(), yes()] + [yes()] * 3
    backend = CheckingBackend(answers)
    desk = watch_desk(backend, "door=a person", clear=1, cooldown=4.0, interval=1.0)
    run = play(one_camera(backend, watch=desk), videos["still"])
    checks = run.of(RuleCheck)
    starts = [a.t for a in run.of(Alert) if a.state == "started"]
    assert starts[0] == checks[0].t
    assert len(starts) >= 2 and starts[1] - starts[0] >= 4.0, "the second start waited out the cooldown"
    assert checks[2].answer == "yes" and checks[2].t not in starts, "a yes inside the cooldown was held back"


def test_checks_take_turns_ahead_of_commentary_and_a_broken_backend_is_no_verdict(videos):
    backend = CheckingBackend([RuntimeError("engine away")] * 3, latency=0.05)
    desk = watch_desk(backend, "door=a person", interval=1.0)
    run = play(one_camera(backend, watch=desk, tuning=Tuning(heartbeat=2.0)), videos["still"])
    broken = run.of(RuleCheck)[:3]
    assert [c.answer for c in broken] == ["none"] * 3 and all("engine away" in c.reason for c in broken)
    assert not run.of(Alert)
    assert backend.checks[0].answer_schema is not None and backend.checks[0].question == "a person"
    assert backend.checks[0].max_tokens <= 64, "a check is a few tokens, not a comment"
    assert len(run.of(CommentaryFinished)) >= 3


def test_an_alert_keeps_its_snapshot_and_clip_in_the_recording_and_the_history_lists_it(videos, tmp_path):
    narrator = OpenCVNarrator()
    recorder = Recorder(tmp_path)
    desk = watch_desk(narrator, "left=motion on the left", clip=2.0, keeps_files=True, interval=5.0)
    run = play(one_camera(narrator, watch=desk, consumers=[recorder]), videos["left_then_right"])
    alert = next(a for a in run.of(Alert) if a.state == "started")
    assert recorder.folder is not None
    snapshot = cv2.imdecode(np.frombuffer((recorder.folder / alert.snapshot).read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert snapshot.shape == (180, 320, 3)
    assert (recorder.folder / alert.snapshot).read_bytes() == alert.jpeg
    clip = next(c for c in run.of(AlertClip) if c.alert_id == alert.alert_id)
    assert clip.clip == alert.clip and 3.0 <= clip.seconds <= 4.5, "2 s before and after"
    with av.open(io.BytesIO((recorder.folder / alert.clip).read_bytes())) as container:
        assert sum(1 for _ in container.decode(video=0)) >= 10
    meta = json.loads((recorder.folder / "session.json").read_text())
    assert meta["alerts"] == 1
    lines = [json.loads(line) for line in (recorder.folder / "events.jsonl").read_text().splitlines()]
    kept = [e for e in lines if e["type"] == "alert"]
    assert kept[0]["snapshot"] == alert.snapshot and "jpeg" not in kept[0]
    with HistoryIndex(tmp_path) as index:
        row, alerts = index.session(recorder.folder.name), index.alerts(recorder.folder.name)
    assert row is not None and row.alerts == 1
    assert (alerts[0].rule, alerts[0].state, alerts[0].snapshot) == ("left", "started", alert.snapshot)


def test_rules_can_be_added_paused_and_removed_while_the_session_runs(videos):
    backend = CheckingBackend(decide=lambda request: yes() if request.question == "a cat" else NO)
    desk = watch_desk(backend, "door=a person", interval=1.0, clear=1)
    session = one_camera(backend, watch=desk)

    def during(session) -> None:
        session.watch.add("cat=a cat")

    run = play(session, videos["still"], during=during)
    assert {c.rule for c in run.of(RuleCheck)} == {"door", "cat"}
    assert [a.state for a in run.of(Alert) if a.rule == "cat"] == ["started", "cleared"]
    assert run.of(Alert)[-1].reason == "the session ended", "no alert stays on after the session"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--headless", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_the_cli_prints_one_line_per_alert_and_refuses_a_rule_the_narrator_cannot_judge(videos, tmp_path):
    done = _cli(
        "--source", str(videos["left_then_right"]), "--watch", "left=motion on the left", "--no-record", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "· watching for left: motion on the left (judged as: motion on the left)" in done.stderr
    alert_lines = [line for line in done.stderr.splitlines() if line.startswith("! ALERT")]
    assert len(alert_lines) == 1 and "left: motion on the left" in alert_lines[0]
    refused = _cli("--source", str(videos["still"]), "--watch", "the pot is boiling over", cwd=tmp_path)
    assert refused.returncode != 0
    assert "cannot judge 'the pot is boiling over'" in refused.stderr and "a scene cut" in refused.stderr
    assert "Traceback" not in refused.stderr
