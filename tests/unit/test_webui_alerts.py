"""The web UI's side of watch rules and alerts without a browser: the alert's chat operation (its snapshot as
a data URL), the status strip's alerts, checks and deliveries, and a tab's rules box before and during a run."""

from __future__ import annotations

import base64
import json

import cv2
import numpy as np
import pytest

from pipeline.backends.base import Choice
from pipeline.backends.opencv_narrator import OpenCVNarrator
from pipeline.config import load_presets, load_settings
from pipeline.events import Alert, DeliveryStatus, RuleCheck
from pipeline.prompts import load_profiles
from pipeline.watch.rules import RuleEntry
from tests.helpers.media import scene_background
from webui import handlers
from webui.chat import SNAPSHOT_SIDE, chat_op
from webui.rules import TabRules
from webui.sessions import SessionManager
from webui.sources import SourceRequest
from webui.status import StatusFeed, StatusSnapshot, render_status

BOILING = "the pot is boiling over"  # outside the offline narrator's vocabulary


def snapshot(width: int, height: int) -> bytes:
    return cv2.imencode(".jpg", scene_background(3, width, height))[1].tobytes()


def alert(state: str, jpeg: bytes = b"", rule: str = "left") -> Alert:
    return Alert(
        t=4.2,
        alert_id="cam-left-1",
        rule=rule,
        text="motion on the left",
        state=state,
        confidence=0.87,
        reason="8% of the picture changing on the left",
        jpeg=jpeg,
    )


def decoded(url: str) -> np.ndarray:
    head, _, data = url.partition(",")
    assert head == "data:image/jpeg;base64"
    return cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)


# --- the chat ---------------------------------------------------------------------------------------


def test_a_started_alert_carries_its_snapshot_as_a_data_url_and_a_cleared_one_none():
    op = chat_op(alert("started", snapshot(320, 180)))
    assert op is not None
    assert {k: v for k, v in op.items() if k != "image"} == {
        "type": "alert",
        "id": "cam-left-1",
        "state": "started",
        "rule": "left",
        "text": "motion on the left",
        "clock": "00:04.2",
        "reason": "8% of the picture changing on the left",
        "confidence": 0.87,
    }
    assert decoded(op["image"]).shape == (180, 320, 3)  # small enough already: sent as it is
    cleared = chat_op(alert("cleared"))
    assert cleared is not None and cleared["state"] == "cleared" and "image" not in cleared


def test_a_large_snapshot_is_shrunk_for_the_chat_and_checks_are_not_shown():
    op = chat_op(alert("started", snapshot(1280, 720)))
    assert op is not None
    assert decoded(op["image"]).shape == (SNAPSHOT_SIDE * 720 // 1280, SNAPSHOT_SIDE, 3)
    assert len(op["image"]) < 150_000
    check = RuleCheck(t=1, rule="left", answer="no", confidence=0.9, reason="still", trigger="interval", ms=3.0)
    assert chat_op(check) is None


# --- the status strip -------------------------------------------------------------------------------


def test_the_status_strip_counts_alerts_and_checks_and_says_how_each_delivery_is_doing():
    snap = StatusSnapshot()
    changes: list[None] = []
    feed = StatusFeed(snap, lambda _s: None, lambda: changes.append(None))
    plain = render_status(snap, "m", "CPU")
    assert 'data-key="alerts"' not in plain and 'data-key="checks"' not in plain  # no rules checked: nothing
    for t in (0.0, 30.0, 70.0, 80.0):
        feed.handle(RuleCheck(t=t, rule="left", answer="no", confidence=0.9, reason="", trigger="motion", ms=2.0))
    feed.handle(alert("started", snapshot(64, 36)))
    feed.handle(DeliveryStatus(t=5, name="webhook", state="ok", sent=3, queued=0, dropped=0))
    feed.handle(DeliveryStatus(t=5, name="mqtt", state="down", sent=0, queued=2, dropped=0, detail="refused <x>"))
    feed.handle(DeliveryStatus(t=6, name="push", state="retrying", sent=5, queued=1, dropped=4))
    out = render_status(snap, "m", "CPU")
    assert changes == [None]  # the rules box hears that an alert went on
    assert "<b>alerts</b> 1 · 1 ON" in out and 'data-key="alerts" data-state="on"' in out
    assert "<b>checks</b> 3/min" in out  # the minute before the newest check
    assert "<b>webhook</b> ok · 3 sent" in out and 'data-state="ok"' in out
    assert "<b>mqtt</b> down · 2 queued" in out and "refused &lt;x&gt;" in out  # the detail on hover, escaped
    assert "<b>push</b> retrying · 5 sent · 1 queued · 4 dropped" in out
    assert out.index("webhook") < out.index('data-key="backend"')  # the model and the device stay last
    feed.handle(alert("cleared"))
    assert "<b>alerts</b> 1<" in render_status(snap, "m", "CPU") and not snap.alerts_on


# --- a tab's rules ----------------------------------------------------------------------------------


@pytest.fixture
def narrator_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return load_settings(tts="none", watch=["left=motion on the left", BOILING])


def test_the_box_starts_with_the_watch_flags_and_refuses_what_the_narrator_cannot_judge(narrator_settings):
    rules = TabRules(narrator_settings, OpenCVNarrator().rule_problem)
    assert [r.name for r, _ in rules.desk.listing()] == ["left"]
    assert rules.note.startswith("The offline narrator cannot judge 'the pot is boiling over': it understands motion")
    assert "--watch" not in rules.note
    assert rules.add("door=a person at the door") and rules.note == ""
    assert not rules.add("door=someone at the door")
    assert "Two rules are named 'door'" in rules.note and "--watch" not in rules.note
    rules.act("pause", "door")
    page = rules.html({"left"})
    assert 'data-rule="left" data-state="alert"' in page and 'data-rule="door" data-state="paused"' in page
    assert 'data-do="resume" data-rule="door"' in page and "rules-note" not in page
    rules.act("remove", "left")
    rules.act("pause", "left")  # a second click on a rule already gone: nothing
    assert [r.name for r, _ in rules.desk.listing()] == ["door"]


def test_a_session_is_built_with_the_tabs_rules_less_those_its_profile_brings(narrator_settings):
    rules = TabRules(narrator_settings, OpenCVNarrator().rule_problem)
    rules.add("door=a person at the door")
    rules.act("remove", "left")  # a --watch rule the user removed
    profile = load_profiles()["narrator"].model_copy(update={"watch": [RuleEntry(name="door", text="someone")]})
    assert rules.settings_for(narrator_settings, profile).watch == []  # no BOILING, no left, the profile's door
    assert rules.settings_for(narrator_settings, load_profiles()["narrator"]).watch == ["door=a person at the door"]
    assert narrator_settings.watch == ["left=motion on the left", BOILING]  # the app's own settings stay


def test_rules_go_to_the_session_at_start_and_changes_reach_it_while_it_runs(narrator_settings, story_video):
    manager = SessionManager(narrator_settings, Choice(OpenCVNarrator(), "test"), load_presets(), load_profiles())
    try:
        assert handlers.add_rule(manager, "tab", BOILING) == BOILING  # refused: kept in the box
        assert handlers.add_rule(manager, "tab", "person=someone") == ""
        handlers.rule_button(manager, "tab", {"do": "pause", "rule": "person"})
        viewer = manager.start("tab", SourceRequest("Upload", str(story_video)), "narrator", "balanced")
        desk = viewer.session.watch
        assert desk is not None and manager.rules("tab").desk is desk
        assert [(r.name, paused) for r, paused in desk.listing()] == [("left", False), ("person", True)]
        assert handlers.add_rule(manager, "tab", "dark=lights off") == ""
        handlers.rule_button(manager, "tab", {"do": "remove", "rule": "left"})
        handlers.rule_button(manager, "tab", {"do": "explode", "rule": "person"})  # not a button of ours
        assert [r.name for r in desk.active()] == ["dark"]
        shown = [json.loads(m) for m in manager.tab("tab").take() if isinstance(m, str)]
        boxes = [m["html"] for m in shown if m["type"] == "rules"]
        assert "cannot judge" in boxes[0] and 'data-rule="dark"' in boxes[-1] and 'data-rule="left"' not in boxes[-1]
    finally:
        manager.close_all()


def test_a_rule_the_profile_brings_stays_removed_in_the_tab_until_added_again(narrator_settings, story_video):
    profiles = load_profiles()
    profiles["narrator"] = profiles["narrator"].model_copy(
        update={"watch": [RuleEntry(name="door", text="a person at the door")]}
    )
    manager = SessionManager(narrator_settings, Choice(OpenCVNarrator(), "test"), load_presets(), profiles)
    request = SourceRequest("Upload", str(story_video))
    try:
        first = manager.start("tab", request, "narrator", "balanced").session.watch
        assert first is not None and [r.name for r, _ in first.listing()] == ["door", "left"]
        handlers.rule_button(manager, "tab", {"do": "remove", "rule": "door"})
        second = manager.start("tab", request, "narrator", "balanced").session.watch
        assert second is not None and [r.name for r, _ in second.listing()] == ["left"]
        other = manager.start("other-tab", request, "narrator", "balanced").session.watch
        assert other is not None and "door" in [r.name for r, _ in other.listing()]  # the profile still has it
        assert handlers.add_rule(manager, "tab", "door=a person at the door") == ""
        third = manager.start("tab", request, "narrator", "balanced").session.watch
        assert third is not None and "door" in [r.name for r, _ in third.listing()]
    finally:
        manager.close_all()
