"""A session's watch rules and how they are checked, shared by its cameras and changed live by the page.

The page adds, removes and pauses rules while the session runs; every camera's watcher reads the
current list before each check. A rule the backend cannot judge (the offline narrator's vocabulary) is
refused when it is added, at Start or later, with the reason.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError
from pipeline.watch.rules import RuleDefaults, WatchRule, check_rules, gather_rules, parse_rule
from pipeline.watch.tracker import Cooldowns

if TYPE_CHECKING:
    from pipeline.backends.base import Backend
    from pipeline.config import Settings
    from pipeline.prompts import Profile


@dataclass(frozen=True, slots=True)
class WatchOptions:
    """How rules are checked: at least every ``interval`` s while the picture is still, sooner on change;
    ``clip`` seconds of video kept before and after an alert (0: none); ``keeps_files``: the session is
    recorded, so snapshots and clips have a folder to go to."""

    interval: float = 10.0
    clip: float = 5.0
    keeps_files: bool = True


class WatchDesk:
    """Thread-safe: the page's handlers change it, the cameras' watchers read it."""

    def __init__(
        self,
        rules: Sequence[WatchRule],
        defaults: RuleDefaults,
        options: WatchOptions,
        cooldowns: Cooldowns,
        judge: Callable[[str], str | None] = lambda _text: None,
    ) -> None:
        self.defaults = defaults
        self.options = options
        self.cooldowns = cooldowns
        self._judge = judge  # the backend's rule_problem
        self._rules: list[WatchRule] = []
        self._paused: set[str] = set()
        self._lock = threading.Lock()
        for rule in rules:
            self._admit(rule)
            self._rules.append(rule)

    def _admit(self, rule: WatchRule) -> None:
        problem = self._judge(rule.text)
        if problem:
            raise ConfigError(f"--watch {rule.name}: {problem}")

    def active(self) -> list[WatchRule]:
        """The rules to check now (not paused), in the order they were added."""
        with self._lock:
            return [r for r in self._rules if r.name not in self._paused]

    @property
    def has_rules(self) -> bool:
        return bool(self._rules)

    def listing(self) -> list[tuple[WatchRule, bool]]:
        """Every rule with whether it is paused."""
        with self._lock:
            return [(r, r.name in self._paused) for r in self._rules]

    def add(self, given: str) -> WatchRule:
        """A new rule from "TEXT" or "NAME=TEXT"; a ConfigError says why one is refused."""
        rule = parse_rule(given, self.defaults)
        self._admit(rule)
        with self._lock:
            check_rules([*self._rules, rule])
            self._rules.append(rule)
        return rule

    def remove(self, name: str) -> bool:
        with self._lock:
            kept = [r for r in self._rules if r.name != name]
            removed = len(kept) != len(self._rules)
            self._rules = kept
            self._paused.discard(name)
            return removed

    def pause(self, name: str, paused: bool = True) -> None:
        with self._lock:
            if not any(r.name == name for r in self._rules):
                raise ConfigError(f"no rule named '{name}'")
            (self._paused.add if paused else self._paused.discard)(name)


def watch_desk(settings: Settings, profile: Profile, backend: Backend, keeps_files: bool) -> WatchDesk:
    """The session's rules from ``--watch`` and the profile's ``watch:``, judged by ``backend`` now."""
    rules = gather_rules(settings.watch, profile.watch, settings.rule_defaults(), profile.name)
    options = WatchOptions(settings.watch_interval, settings.watch_clip, keeps_files)
    return WatchDesk(
        rules, settings.rule_defaults(), options, Cooldowns(settings.watch_camera_cooldown), backend.rule_problem
    )
