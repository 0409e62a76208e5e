"""An alert's life for one rule on one camera: confirmed by ``confirm`` yes answers in a row, cleared by
``clear`` no answers in a row, and held back while a cooldown runs.

Two cooldowns, and an alert waits for both (``Cooldowns``): the rule's own on that camera (the same
person at the same door is one alert a minute, not one per check), and the camera's over all its rules
(``--watch-camera-cooldown``: one busy camera does not ring every rule at once). Time is the camera's
media time, so a file replayed faster or slower behaves the same; when it goes back (a loop) the
cooldowns start over. No verdict (an answer that could not be read) changes nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

from pipeline.watch.rules import WatchRule
from pipeline.watch.verdict import Verdict

Outcome = Literal["started", "cleared", "held", ""]


class Cooldowns:
    """When each (camera, rule) and each camera last alerted; shared by a session's cameras."""

    def __init__(self, camera_cooldown: float = 0.0) -> None:
        self.camera_cooldown = camera_cooldown
        self._rule: dict[tuple[str, str], float] = {}
        self._camera: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait_left(self, camera: str, rule: WatchRule, now: float) -> float:
        """Seconds before ``rule`` may alert on ``camera`` (0: it may now)."""
        with self._lock:
            left = 0.0
            for last, cooldown in (
                (self._rule.get((camera, rule.name)), rule.cooldown),
                (self._camera.get(camera), self.camera_cooldown),
            ):
                if last is not None and now >= last:  # media time went back: start over
                    left = max(left, last + cooldown - now)
            return left

    def note(self, camera: str, rule: str, now: float) -> None:
        with self._lock:
            self._rule[(camera, rule)] = now
            self._camera[camera] = now


@dataclass
class RuleTrack:
    """One rule on one camera."""

    rule: WatchRule
    active: bool = False
    yes_run: int = 0
    no_run: int = 0
    held: int = 0  # confirmed alerts held back by a cooldown
    counts: dict[str, int] = field(default_factory=lambda: {"yes": 0, "no": 0, "none": 0})

    def step(self, verdict: Verdict | None, camera: str, now: float, cooldowns: Cooldowns) -> Outcome:
        """Take one check's verdict; what it did to the alert."""
        if verdict is None:
            self.counts["none"] += 1
            return ""
        yes = verdict.yes and verdict.confidence >= self.rule.min_confidence
        self.counts["yes" if yes else "no"] += 1
        if self.active:
            self.no_run = 0 if yes else self.no_run + 1
            if self.no_run >= self.rule.clear:
                self.active, self.no_run, self.yes_run = False, 0, 0
                return "cleared"
            return ""
        self.yes_run = self.yes_run + 1 if yes else 0
        if self.yes_run < self.rule.confirm:
            return ""
        if cooldowns.wait_left(camera, self.rule, now) > 0:
            self.held += 1
            return "held"
        cooldowns.note(camera, self.rule.name, now)
        self.active, self.yes_run, self.no_run = True, 0, 0
        return "started"
