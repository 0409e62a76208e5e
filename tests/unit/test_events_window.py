"""The event bus (non-blocking fan-out, bounded queues) and the frame window."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from pipeline.events import (
    CommentaryAudio,
    CommentaryDelta,
    CommentaryFinished,
    CommentaryStarted,
    ErrorEvent,
    EventBus,
    Metrics,
    ModeChanged,
    SceneCut,
    SourceStatus,
)
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


def audio(i: float, comment_id: int = 1) -> CommentaryAudio:
    return CommentaryAudio(t=i, comment_id=comment_id, sample_rate=24_000, samples=np.zeros(240, np.int16))


def test_a_slow_subscriber_loses_its_oldest_high_rate_events_and_never_blocks_the_producer():
    bus = EventBus()
    slow = bus.subscribe("slow", maxsize=3)
    for i in range(10):
        bus.publish(audio(i))
    assert slow.dropped == {"commentary_audio": 7}
    assert bus.dropped() == {"slow": 7}
    bus.close()
    assert [e.t for e in slow] == [7, 8, 9]


def test_flooding_a_slow_consumer_loses_no_control_event_and_no_text():
    """Thousands of deltas and audio chunks, with every kind of control event among them, into a consumer
    that reads nothing until the end: each control event arrives, in order; each comment's text is whole."""
    bus = EventBus()
    slow = bus.subscribe("slow", maxsize=8)
    control: list[object] = [SourceStatus(t=0, state="live")]
    bus.publish(control[0])
    texts: dict[int, str] = {}
    for cid in range(1, 41):
        for event in (
            CommentaryStarted(t=cid, comment_id=cid, trigger="active", frames=3),
            ModeChanged(t=cid, mode="active"),
        ):
            bus.publish(event)
            control.append(event)
        for k in range(100):
            bus.publish(CommentaryDelta(t=cid, comment_id=cid, text=f"{cid}.{k} "))
            bus.publish(audio(cid, cid))
        texts[cid] = "".join(f"{cid}.{k} " for k in range(100))
        for event in (
            CommentaryFinished(t=cid, comment_id=cid, text=texts[cid]),
            Metrics(t=cid, comment_id=cid, stages={"total_ms": 1.0}),
            SceneCut(t=cid, score=0.9),
            ErrorEvent(t=cid, message="the model stalled", fatal=cid == 40),
        ):
            bus.publish(event)
            control.append(event)
    bus.close()
    got = list(slow)
    assert [e for e in got if e.delivery == "always"] == control  # every one, in order
    heard: dict[int, str] = {}
    for event in got:
        if isinstance(event, CommentaryDelta):
            heard[event.comment_id] = heard.get(event.comment_id, "") + event.text
    assert heard == texts  # merged, never lost
    assert slow.dropped["commentary_audio"] > 3000 and "commentary_delta" not in slow.dropped
    assert slow.merged > 3000 and bus.dropped() == {"slow": slow.dropped["commentary_audio"]}


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
