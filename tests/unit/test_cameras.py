"""Two cameras in one session, from code: one bus, one shared backend behind its scheduler, every event
naming its camera, consumers that fail alone. Real decoded video; the backend is a scripted double so
the turns it is given can be counted."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pysubs2
import pytest

from pipeline.backends.base import CommentRequest
from pipeline.camera import CameraSpec
from pipeline.config import Tuning
from pipeline.consumers.base import Consumer
from pipeline.consumers.events_file import EventsFile
from pipeline.events import CommentaryFinished, ErrorEvent, Event, Metrics, SourceStatus
from pipeline.prompts import load_profiles
from pipeline.recording.folder import read_meta
from pipeline.recording.recorder import Recorder
from pipeline.scheduler import scheduler_for
from pipeline.session import Session
from tests.helpers.media import Segment, write_video
from tests.helpers.scripted_backend import ScriptedBackend
from tests.helpers.session_run import play

BUSY = Tuning(min_interval=0.1, active_interval=0.1, heartbeat=0.1, idle_after=100.0)  # always due: contention


@pytest.fixture(scope="module")
def videos(media_dir: Path) -> tuple[Path, Path]:
    return (
        write_video(media_dir / "door.mp4", [Segment(4, 4, moving=True)]),
        write_video(media_dir / "yard.mp4", [Segment(5, 3, moving=True)]),
    )


class Failing(Consumer):
    """Raises on the second comment it sees."""

    name = "failing"
    wants = (CommentaryFinished,)

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def handle(self, event: Event) -> None:
        self.seen += 1
        if self.seen == 2:
            raise RuntimeError("deliberately broken")


class StatefulBackend(ScriptedBackend):
    """A double of a backend that keeps per-stream state (MiniCPM's streaming session): a turn for another
    stream than the last one starts over, which costs ``switch_s`` before the first token."""

    keeps_stream_state = True

    def __init__(self, switch_s: float) -> None:
        super().__init__()
        self.switch_s = switch_s
        self.turns: list[str] = []

    def stream(self, request: CommentRequest) -> Iterator[str]:
        started = time.perf_counter()
        if self.turns and self.turns[-1] != request.stream_id:
            time.sleep(self.switch_s)  # the re-prefill a real model pays: work, not synchronisation
        self.turns.append(request.stream_id)
        words = super().stream(request)
        first = next(words, None)
        request.timings["model_start"] = started  # the time to first token includes the start-over
        if first is not None:
            yield first
            yield from words


def two_cameras(backend: ScriptedBackend, tuning: Tuning, consumers: list[Consumer]) -> Session:
    narrator = load_profiles()["narrator"]
    session = Session(backend, narrator, tuning, name="Front door", consumers=consumers)
    session.add_camera(CameraSpec(backend, narrator, tuning, name="Back yard"))
    return session


def test_two_cameras_share_a_backend_and_every_event_names_its_camera(videos, tmp_path: Path) -> None:
    backend = ScriptedBackend()
    events_file = EventsFile(tmp_path / "events.jsonl")
    session = two_cameras(backend, Tuning(min_interval=1.0, active_interval=1.0), [events_file])
    events = play(session, *videos).events
    assert session.error is None
    assert all(e.camera is not None for e in events)
    by_camera: dict[str, list[Event]] = {}
    for event in events:
        by_camera.setdefault(event.camera.id, []).append(event)
    assert set(by_camera) == {"front-door", "back-yard"}
    for camera_events in by_camera.values():
        comments = [e for e in camera_events if isinstance(e, CommentaryFinished)]
        assert len(comments) >= 2 and [c.comment_id for c in comments] == list(range(1, len(comments) + 1))
        assert [e.state for e in camera_events if isinstance(e, SourceStatus)][-1] == "ended"
    assert {e.camera.name for e in events} == {"Front door", "Back yard"}
    waits = [e.stages["queue_wait_ms"] for e in events if isinstance(e, Metrics)]
    assert waits and all(w >= 0 for w in waits)
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(lines) == len(events)
    assert all(list(line)[:3] == ["type", "t", "wall"] and set(line["camera"]) == {"id", "name"} for line in lines)


def test_a_failing_consumer_is_reported_and_the_session_goes_on(videos) -> None:
    failing = Failing()
    session = two_cameras(ScriptedBackend(), Tuning(min_interval=1.0, active_interval=1.0), [failing])
    run = play(session, *videos)
    assert session.error is None and failing.failed and not failing.running
    errors = run.of(ErrorEvent)
    assert [e.message for e in errors] == ["failing stopped: RuntimeError: deliberately broken"]
    assert not errors[0].fatal
    after = run.events[run.events.index(errors[0]) :]
    assert sum(isinstance(e, CommentaryFinished) for e in after) >= 2  # the commentary went on without it


def turns_in_a_row(turns: list[str]) -> list[int]:
    return [len(list(group)) for _, group in itertools.groupby(turns)]


@pytest.mark.parametrize("keeps_state", [True, False])
def test_cameras_interleaving_on_a_stateful_backend_switch_less_and_wait_boundedly(videos, keeps_state) -> None:
    backend = StatefulBackend(switch_s=0.4)
    backend.keeps_stream_state = keeps_state
    run = play(two_cameras(backend, BUSY, []), *videos, speed=1.0)  # real time: enough turns to see the pattern
    scheduler = scheduler_for(backend)
    runs = turns_in_a_row(backend.turns)
    assert scheduler.switches == len(runs) - 1  # the scheduler's count is the backend's start-overs
    assert scheduler.cost.seconds is not None and scheduler.cost.seconds > 0.2  # a switch is measured
    if keeps_state:
        assert max(runs[:-1]) <= scheduler.sticky_turns  # the other camera waits a few turns, no more (the last
        # run is the camera whose file is longer, alone)
        assert scheduler.switches <= scheduler.turns / 2
    else:
        assert scheduler.switches >= scheduler.turns / 2
    waits = [e.stages["queue_wait_ms"] for e in run.of(Metrics)]
    assert max(waits) < (scheduler.max_wait + 2) * 1000


def test_two_cameras_are_recorded_in_one_folder_each_with_its_own_subtitles(videos, tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "sessions")
    session = two_cameras(ScriptedBackend(), Tuning(min_interval=1.0, active_interval=1.0), [recorder])
    run = play(session, *videos)
    assert recorder.folder is not None and recorder.stopped_because is None
    meta = read_meta(recorder.folder)
    assert [c.id for c in meta.cameras] == ["front-door", "back-yard"] and not meta.interrupted
    assert [c.files["srt"] for c in meta.cameras] == ["subtitles.srt", "subtitles.back-yard.srt"]
    for camera in meta.cameras:
        kept = [e.text.strip() for e in run.of(CommentaryFinished) if e.camera.id == camera.id and not e.suppressed]
        cues = pysubs2.load(str(recorder.folder / camera.files["srt"]))
        assert " ".join(c.plaintext.replace("\n", " ") for c in cues).split() == " ".join(kept).split()
    assert meta.comments == sum(1 for e in run.of(CommentaryFinished) if not e.suppressed and e.text.strip())
