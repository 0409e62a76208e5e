"""Watch rules from flags, env and profiles; the check's answer read strictly; an alert's life (confirm,
cooldowns, clear) step by step; the offline narrator's vocabulary."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.backends.opencv_narrator import OpenCVNarrator
from pipeline.backends.opencv_rules import VOCABULARY, judge, read_condition
from pipeline.cli import parse_overrides
from pipeline.config import load_settings
from pipeline.errors import ConfigError
from pipeline.prompts import Profile
from pipeline.watch.desk import WatchDesk, WatchOptions
from pipeline.watch.rules import RuleDefaults, RuleEntry, gather_rules, parse_rule, rule_slug
from pipeline.watch.tracker import Cooldowns, RuleTrack
from pipeline.watch.verdict import Verdict, parse_verdict

DEFAULTS = RuleDefaults()


def test_a_rule_is_named_by_the_user_or_by_a_slug_of_its_words():
    assert parse_rule("door=a person is at the front door", DEFAULTS).name == "door"
    rule = parse_rule("  A person is at the   front door ", DEFAULTS)
    assert (rule.name, rule.text) == ("person-front-door", "A person is at the front door")
    assert rule_slug("!!!") == "rule"


@pytest.mark.parametrize(
    ("given", "says"),
    [("", "empty rule"), ("door=", "empty rule"), ("x" * 201, "text"), ("my door=someone", "name")],
)
def test_a_bad_rule_is_a_config_error_that_says_what(given, says):
    with pytest.raises(ConfigError, match=says):
        parse_rule(given, DEFAULTS)


def test_two_rules_with_one_name_are_refused_with_the_way_out():
    with pytest.raises(ConfigError, match=r"two rules are named 'door'.*door-2="):
        gather_rules(["door=a person", "door=a cat"], [], DEFAULTS)


def test_rules_come_from_repeated_flags_the_env_and_a_profile_with_its_own_numbers(monkeypatch):
    settings = load_settings(**parse_overrides(["--watch", "door=a person", "--watch", "motion on the left"]))
    assert settings.watch == ["door=a person", "motion on the left"]
    monkeypatch.setenv("ONLOOKER_WATCH", "door=a person; smoke\nfire")
    assert load_settings().watch == ["door=a person", "smoke", "fire"]
    profile = Profile(
        name="p",
        system_prompt="s",
        watch=["someone falls", {"text": "a pot boils over", "name": "pot", "cooldown": 5, "confirm": 3}],
    )
    rules = gather_rules(["door=a person"], profile.watch, RuleDefaults(cooldown=60, confirm=1))
    assert [(r.name, r.cooldown, r.confirm) for r in rules] == [
        ("someone-falls", 60, 1),
        ("pot", 5, 3),
        ("door", 60, 1),
    ]
    with pytest.raises(ConfigError, match="confirm"):
        gather_rules([], [RuleEntry(text="x", confirm=None), RuleEntry.model_construct(text="y", confirm=0)], DEFAULTS)


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        (
            '{"answer": "yes", "confidence": 0.8, "reason": "a man at the door"}',
            Verdict(True, 0.8, "a man at the door"),
        ),
        ('```json\n{"answer": "No", "confidence": 1, "reason": ""}\n```', Verdict(False, 1.0, "")),
        ('{"answer": "yes", "confidence": 1.2, "reason": "x"}', None),
        ('{"answer": "yes", "confidence": true, "reason": "x"}', None),
        ('{"answer": "maybe", "confidence": 0.5, "reason": "x"}', None),
        ('{"answer": "yes", "confidence": 0.5}', None),
        ('Yes. {"answer": "yes", "confidence": 0.5, "reason": "x"}', None),
        ("[1, 2]", None),
        ("llama llama duck", None),
        ("", None),
    ],
)
def test_an_answer_is_read_strictly_and_anything_else_is_no_verdict(answer, verdict):
    assert parse_verdict(answer) == verdict


YES, NO = Verdict(True, 0.9, "there"), Verdict(False, 0.9, "not there")


def test_an_alert_is_confirmed_by_consecutive_yes_and_no_verdict_changes_nothing():
    track = RuleTrack(parse_rule("door=a person", RuleDefaults(confirm=2)))
    book = Cooldowns()
    steps = [track.step(v, "cam", t, book) for t, v in enumerate([YES, NO, YES, None, YES])]
    assert steps == ["", "", "", "", "started"]
    assert track.counts == {"yes": 3, "no": 1, "none": 1}


def test_a_yes_below_the_rules_confidence_counts_as_a_no():
    track = RuleTrack(parse_rule("door=a person", RuleDefaults(min_confidence=0.7)))
    assert track.step(Verdict(True, 0.6, "maybe"), "cam", 0, Cooldowns()) == ""
    assert track.step(Verdict(True, 0.7, "yes"), "cam", 1, Cooldowns()) == "started"


def test_an_alert_clears_after_consecutive_no_and_waits_out_its_cooldown():
    rule = parse_rule("door=a person", RuleDefaults(clear=2, cooldown=30))
    track, book = RuleTrack(rule), Cooldowns()
    outcomes = [track.step(v, "cam", t, book) for t, v in [(0, YES), (5, NO), (6, YES), (7, NO), (8, NO)]]
    assert outcomes == ["started", "", "", "", "cleared"]
    assert track.step(YES, "cam", 20, book) == "held"  # 20 s after it started: the cooldown holds it back
    assert track.held == 1
    assert track.step(YES, "cam", 30, book) == "started"
    assert RuleTrack(rule).step(YES, "other-cam", 31, book) == "started"  # each camera has its own


def test_the_camera_cooldown_holds_back_its_other_rules_and_a_loop_starts_over():
    book = Cooldowns(camera_cooldown=10)
    door = RuleTrack(parse_rule("door=a person", RuleDefaults(cooldown=0)))
    gate = RuleTrack(parse_rule("gate=a car", RuleDefaults(cooldown=0)))
    assert door.step(YES, "cam", 100, book) == "started"
    assert gate.step(YES, "cam", 105, book) == "held"
    assert gate.step(YES, "cam", 2, book) == "started"  # media time went back (the file looped)


def test_the_offline_narrator_reads_its_vocabulary_and_refuses_the_rest_with_the_list():
    narrator = OpenCVNarrator()
    assert narrator.rule_meaning("someone moving in the top right") == "a person and motion near the top right"
    assert narrator.rule_meaning("the lights go off") == "dark"
    assert narrator.rule_meaning("a scene cut") == "a scene cut"
    assert narrator.rule_problem("motion on the left") is None
    problem = narrator.rule_problem("the pot is boiling over")
    assert problem is not None and VOCABULARY in problem
    desk = WatchDesk([], DEFAULTS, WatchOptions(), Cooldowns(), narrator.rule_problem)
    with pytest.raises(ConfigError, match="cannot judge 'the pot is boiling over'"):
        desk.add("pot=the pot is boiling over")
    assert desk.listing() == []
    with pytest.raises(ConfigError, match="cannot judge"):
        WatchDesk([parse_rule("a unicorn", DEFAULTS)], DEFAULTS, WatchOptions(), Cooldowns(), narrator.rule_problem)


def _pacing(column: int, count: int = 4) -> list[np.ndarray]:
    """A bright square moving within one third of a grey picture (0 left, 1 centre, 2 right)."""
    frames = []
    for i in range(count):
        image = np.full((180, 320, 3), 90, np.uint8)
        x = column * 106 + (i % 2) * 50
        image[70:110, x : x + 40] = 250
        frames.append(image)
    return frames


def test_motion_is_judged_in_the_part_of_the_picture_the_rule_names():
    frames, times = _pacing(0), [0.0, 1.0, 2.0, 3.0]
    left, right = read_condition("motion on the left"), read_condition("movement on the right")
    assert left is not None and right is not None
    holds, confidence, reason = judge(left, frames, times, cut=False)
    assert holds and confidence > 0.5 and "on the left" in reason
    assert not judge(right, frames, times, cut=False)[0]
    still = [np.full((180, 320, 3), 90, np.uint8)] * 4
    assert not judge(left, still, times, cut=False)[0]
    dark = read_condition("it is dark")
    assert dark is not None and judge(dark, [np.zeros((180, 320, 3), np.uint8)] * 2, [0, 1], cut=False)[0]
