"""The event bus (non-blocking fan-out, bounded queues) and the frame window."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from pipeline.events import CommentaryFinished, ErrorEvent, EventBus, SceneCut
from pipeline.frames import Frame
from pipeline.window import FrameWindow


def _frame(i: int, t: float | None = None) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), float(i) if t is None else t, 0.0, i, "t")


def test_event_dict_has_the_contract_fields():
    data = CommentaryFinished(t=1.5, comment_id=3, text="hi").to_dict()
    assert list(data)[:1] == ["type"]
    assert data["type"] == "commentary_end" and data["t"] == 1.5 and isinstance(data["wall"], float)
    assert data["text"] == "hi"
    json.dumps(data)


def test_every_subscriber_sees_every_event_in_order():
    bus = EventBus()
    a, b = bus.subscribe("a"), bus.subscribe("b")
    for i in range(5):
        bus.publish(SceneCut(t=i, score=1.0))
    bus.close()
    assert [e.t for e in a] == [0, 1, 2, 3, 4]
    assert [e.t for e in b] == [0, 1, 2, 3, 4]


def test_a_slow_subscriber_loses_oldest_events_and_never_blocks_the_producer():
    bus = EventBus()
    slow = bus.subscribe("slow", maxsize=3)
    for i in range(10):
        bus.publish(ErrorEvent(t=i, message="x"))
    assert slow.dropped == 7
    assert bus.dropped() == {"slow": 7}
    bus.close()
    assert [e.t for e in slow] == [7, 8, 9]


def test_get_times_out_and_close_wakes_a_waiting_consumer():
    bus = EventBus()
    sub = bus.subscribe("x")
    assert sub.get(timeout=0.01) is None
    got: list[object] = []
    consumer = threading.Thread(target=lambda: got.extend(sub))
    consumer.start()
    bus.publish(SceneCut(t=1, score=1))
    bus.close()
    consumer.join(5)
    assert not consumer.is_alive() and len(got) == 1
    assert bus.subscribe("late").closed


def test_window_keeps_only_the_newest_frames():
    window = FrameWindow(4)
    for i in range(10):
        window.add(_frame(i))
    assert [f.index for f in window.snapshot()] == [6, 7, 8, 9]


def test_stride_counts_back_from_the_newest_and_limit_keeps_newest():
    window = FrameWindow(16)
    for i in range(10):
        window.add(_frame(i))
    assert [f.index for f in window.snapshot(stride=3)] == [0, 3, 6, 9]
    assert [f.index for f in window.snapshot(stride=2, limit=2)] == [7, 9]
    assert [f.index for f in window.snapshot(since=7.5)] == [8, 9]
    with pytest.raises(ValueError):
        window.snapshot(stride=0)
    with pytest.raises(ValueError):
        FrameWindow(0)


def test_window_is_safe_under_concurrent_writers_and_readers():
    window = FrameWindow(8)
    stop = threading.Event()
    errors: list[Exception] = []

    def read() -> None:
        while not stop.is_set():
            try:
                frames = window.snapshot(stride=2)
                assert len(frames) <= 4
                assert [f.index for f in frames] == sorted(f.index for f in frames)
            except Exception as exc:  # pragma: no cover - the failure path
                errors.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(20000):
        window.add(_frame(i))
    stop.set()
    reader.join(5)
    assert not errors
