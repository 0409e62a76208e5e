"""The hub's bookkeeping of outages and source lag, frame by frame (no threads, no servers)."""

from __future__ import annotations

import numpy as np

from pipeline.config import Tuning
from pipeline.events import EventBus
from pipeline.frames import Frame
from pipeline.hub import LAG_FRAMES, FrameHub
from pipeline.prompts import build_prompt, load_profiles


def frame(t: float, wall: float, capture: float | None = None, value: int = 0) -> Frame:
    return Frame(np.full((36, 64, 3), value, np.uint8), t, wall, int(t * 10), "cam", capture)


def test_source_lag_is_the_median_age_of_recent_frames_and_nothing_when_unknown() -> None:
    hub = FrameHub(EventBus(), Tuning())
    assert hub.source_lag() is None
    hub.push(frame(0.0, 100.0))  # no capture clock: still nothing
    assert hub.source_lag() is None
    ages = [0.04, 0.05, 0.9, 0.045]
    for i, age in enumerate(ages):
        hub.push(frame(0.1 * (i + 1), 100.0 + i, capture=100.0 + i - age))
    assert abs(hub.source_lag() - 0.0475) < 1e-9
    for i in range(LAG_FRAMES):  # older ages fall out of the window
        hub.push(frame(1 + i, 200.0 + i, capture=200.0 + i - 0.2))
    assert abs(hub.source_lag() - 0.2) < 1e-9


def test_a_camera_clock_far_off_gives_no_lag_rather_than_nonsense() -> None:
    for offset in (-5.0, 120.0):  # camera clock ahead of ours, or minutes behind
        hub = FrameHub(EventBus(), Tuning())
        hub.push(frame(0.0, 100.0, capture=100.0 - offset))
        assert hub.source_lag() is None


def test_frames_after_a_gap_start_a_new_scene_and_say_how_long_the_feed_was_gone() -> None:
    hub = FrameHub(EventBus(), Tuning())
    hub.push(frame(0.0, 100.0))
    hub.push(frame(0.5, 100.5))
    assert hub.take_return() is None and not hub.in_gap
    hub.mark_gap()
    assert hub.in_gap and hub.take_return() is None
    hub.push(frame(7.5, 107.5, value=200))  # the timeline carried on across the outage
    assert not hub.in_gap and hub.last_cut == 7.5 and hub.peek_cut() is None
    assert hub.take_return() == 7.0 and hub.take_return() is None
    assert [f.media_time for f in hub.window.snapshot(since=hub.last_cut)] == [7.5]


def test_the_comment_after_an_outage_is_told_why() -> None:
    profile = load_profiles()["narrator"]
    prompt = build_prompt(profile, frame_count=1, span_seconds=0, recent=[], instructions=[], trigger="feed_back",
                          outage=12.4)  # fmt: skip
    assert "cut off for about 12 s" in prompt.user
    plain = build_prompt(profile, frame_count=1, span_seconds=0, recent=[], instructions=[], trigger="active")
    assert "cut off" not in plain.user
