"""The commentator's and the watcher's threads (``pipeline.hub_worker``) never die silently: a bug in what they
ask the backend is one error event with its reason, kept in ``failed``, and their thread ends. The
commentator's stops the camera (fatal); the watcher's stops the alerts only, and commentary goes on."""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.backends.base import CommentRequest
from pipeline.config import Tuning
from pipeline.events import CommentaryFinished, ErrorEvent
from tests.helpers.scripted_backend import ScriptedBackend
from tests.helpers.session_run import one_camera, play, watch_desk


class Buggy(ScriptedBackend):
    """Raises what no backend should (not a BackendError) for comments, or for rule checks only."""

    def __init__(self, checks_only: bool) -> None:
        super().__init__()
        self.checks_only = checks_only

    def stream(self, request: CommentRequest) -> Iterator[str]:
        if request.answer_schema is not None or not self.checks_only:
            raise RuntimeError("a bug")
        yield from super().stream(request)


def test_a_commentator_crash_is_one_fatal_error_and_its_thread_ends(story_video) -> None:
    session = one_camera(Buggy(checks_only=False))
    run = play(session, story_video)  # ends: the camera cannot go on without its commentator
    errors = run.of(ErrorEvent)
    assert [(e.message, e.fatal) for e in errors] == [("commentator crashed: RuntimeError: a bug", True)]
    assert session.cameras[0].commentator.failed == errors[0].message and not run.of(CommentaryFinished)


def test_a_watcher_crash_stops_the_alerts_and_commentary_goes_on(story_video) -> None:
    backend = Buggy(checks_only=True)
    session = one_camera(backend, tuning=Tuning(active_interval=2.0), watch=watch_desk(backend, "a door opens"))
    run = play(session, story_video)
    errors = run.of(ErrorEvent)
    assert [(e.message, e.fatal) for e in errors] == [("alerts stopped: RuntimeError: a bug", False)]
    watcher = session.cameras[0].watcher
    assert watcher is not None and watcher.failed == errors[0].message
    after = run.events[run.events.index(errors[0]) :]
    assert any(isinstance(e, CommentaryFinished) for e in after)
