"""Scene-cut detection and motion measurement on real encoded video with known cuts."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from pipeline.config import Tuning
from pipeline.events import EventBus, SceneCut
from pipeline.hub import FrameHub
from pipeline.scene import SceneScorer
from pipeline.sources.decode import decode_frames, open_video
from tests.helpers.media import Segment, cut_times, write_video


def _cut_segments() -> list[Segment]:
    """24 cuts between 8 scenes, alternating static and moving shots of 0.6-1.4 s."""
    rng = np.random.default_rng(7)
    segments, scene = [], 0
    for i in range(25):
        scene = (scene + 1 + int(rng.integers(0, 6))) % 8
        segments.append(Segment(round(float(rng.uniform(0.6, 1.4)), 1), scene, moving=bool(i % 2)))
    return segments


def _unpaced_frames(path):
    container = open_video(str(path), str(path))
    try:
        yield from decode_frames(container, threading.Event(), "t", str(path), paced=False)
    finally:
        container.close()


@pytest.fixture(scope="module")
def cut_video(media_dir):
    segments = _cut_segments()
    return write_video(media_dir / "cuts.mp4", segments, fps=25), cut_times(segments, 25)


def test_hub_finds_every_cut_within_a_fifth_of_a_second(cut_video):
    path, expected = cut_video
    assert len(expected) >= 20
    bus = EventBus()
    sub = bus.subscribe("test")
    hub = FrameHub(bus, Tuning())
    for frame in _unpaced_frames(path):
        hub.push(frame)
    bus.close()
    found = [e.t for e in sub if isinstance(e, SceneCut)]
    matched = [t for t in expected if any(abs(t - f) <= 0.2 for f in found)]
    misses = len(expected) - len(matched)
    false_alarms = sum(1 for f in found if not any(abs(t - f) <= 0.2 for t in expected))
    assert misses + false_alarms <= max(1, len(expected) // 20), (expected, found)
    # The cut event carries the media time of the first frame after the cut.
    assert all(any(abs(t - f) < 0.05 for f in found) for t in matched)


def test_motion_is_not_a_cut_and_raises_the_scene_weight():
    from tests.helpers.media import render_frames

    scorer = SceneScorer()
    fps = 15
    scores = [
        scorer.score(f, i / fps)
        for i, f in enumerate(render_frames([Segment(2, 3), Segment(3, 3, True)], fps, 320, 180))
    ]
    assert not any(s.cut for s in scores)
    still, moving = scores[5 : 2 * fps], scores[3 * fps :]
    assert max(s.motion for s in still) == 0.0
    assert min(s.motion for s in moving) > Tuning().motion_threshold
    assert min(s.weight for s in moving) > max(s.weight for s in still)


def test_motion_level_does_not_depend_on_frame_rate():
    """The hub scores at most scene_fps frames a second, so 15, 30 and 60 FPS sources agree."""
    from pipeline.frames import Frame
    from tests.helpers.media import render_frames

    levels = []
    for fps in (15, 30, 60):
        hub = FrameHub(EventBus(), Tuning(scene_fps=15))
        for i, image in enumerate(render_frames([Segment(3, 4, True)], fps, 320, 180)):
            hub.push(Frame(image, i / fps, 0.0, i, "t"))
        levels.append(hub.score.motion)
    assert max(levels) == pytest.approx(min(levels), rel=0.25), levels


def test_hub_captures_at_capture_rate_and_scores_every_frame_up_to_scene_fps(story_video):
    bus = EventBus()
    hub = FrameHub(bus, Tuning(capture_fps=2.0, window=64, scene_fps=15))
    frames = list(_unpaced_frames(story_video))
    for frame in frames:
        hub.push(frame)
    duration = frames[-1].media_time
    captured = hub.window.snapshot()
    # 2 per second, plus one extra capture per cut
    assert abs(len(captured) - duration * 2) <= 3
    assert hub.scored == len(frames)  # the story clip is 15 FPS, so every frame is scored
    gaps = np.diff([f.media_time for f in captured])
    assert gaps.max() <= 0.5 + 1 / 15 + 1e-6  # one frame of quantisation
