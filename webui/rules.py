"""A tab's watch rules: what the rules box lists, what each new session of the tab gets, and the box's HTML.

Why the tab keeps a desk of its own: a rule typed before Start (and the ``--watch`` rules the box starts
with) must be judged at once, since the offline narrator refuses what it cannot measure, and the rules
must outlive a Stop. A new session is built with the tab's rules as its ``--watch`` rules, and its desk
then becomes the tab's, so that while it runs every change reaches the rules its cameras check at once.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Callable, Collection

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.prompts import Profile
from pipeline.watch.desk import WatchDesk, WatchOptions
from pipeline.watch.rules import gather_rules
from pipeline.watch.tracker import Cooldowns

ACTIONS = ("pause", "resume", "remove")  # what a rule's buttons ask for (the page sends them on its channel)
EMPTY = (
    '<p class="rules-empty">No rules yet. Type what to watch for, like “a person is at the front door”, and press '
    "Add; NAME=… names a rule for MQTT and webhooks.</p>"
)
_FLAG = re.compile(r"^--watch(?: [\w-]+)?: |--watch (?=\")")  # the command line's words; the box has no flags


def refusal(error: ConfigError) -> str:
    """A refused rule's reason as the box says it: without the command line's prefix, a sentence."""
    text = _FLAG.sub("", str(error))
    return text[:1].upper() + text[1:]


class TabRules:
    """Thread-safe: the page's handlers and its channel change it; Start hands it to the new session."""

    def __init__(self, settings: Settings, judge: Callable[[str], str | None]) -> None:
        self.desk = WatchDesk([], settings.rule_defaults(), WatchOptions(), Cooldowns(), judge)
        self.note = ""  # why the last rule was refused, shown under the box until the next change
        self._removed: set[str] = set()  # removed in this tab: a rule the profile brings stays out at the next Start
        self._lock = threading.Lock()
        for given in settings.watch:
            self.add(given)

    def add(self, given: str) -> bool:
        """A rule from the box ("TEXT" or "NAME=TEXT"); False when refused, with the reason in ``note``."""
        with self._lock:
            try:
                rule = self.desk.add(given)
            except ConfigError as exc:
                self.note = refusal(exc)
                return False
            self._removed.discard(rule.name)
            self.note = ""
            return True

    def act(self, action: str, name: str) -> None:
        """A rule's button, one of ``ACTIONS`` (a rule already gone, say after a second click, is left gone)."""
        with self._lock:
            self.note = ""
            if action == "remove":
                self.desk.remove(name)
                self._removed.add(name)
            elif any(rule.name == name for rule, _ in self.desk.listing()):
                self.desk.pause(name, action == "pause")

    def settings_for(self, settings: Settings, profile: Profile) -> Settings:
        """The settings a new session of this tab is built with: its ``--watch`` rules are the tab's, less those
        the profile brings itself. So a flag's rule the user removed stays removed, one the backend refused
        never stops a Start, and what announces the rules (MQTT discovery) hears the tab's."""
        return settings.model_copy(update={"watch": self.given(settings, profile)})

    def given(self, settings: Settings, profile: Profile) -> list[str]:
        """The tab's rules as ``--watch`` takes them ("NAME=TEXT", paused ones too), less those the profile
        brings itself: what a new session is given, and what Save as default keeps."""
        own = {rule.name for rule in gather_rules([], profile.watch, settings.rule_defaults(), profile.name)}
        with self._lock:
            return [f"{rule.name}={rule.text}" for rule, _ in self.desk.listing() if rule.name not in own]

    def hand_over(self, live: WatchDesk) -> None:
        """The new session's desk (built from ``settings_for``) becomes the one the box changes; a rule paused in
        the box stays paused, one added while the session was being built joins it, and one of the profile's
        that was removed in this tab stays removed (the profile's file keeps it for other tabs)."""
        with self._lock:
            present = {rule.name for rule, _ in live.listing()}
            refused = []
            for rule, paused in self.desk.listing():
                try:
                    if rule.name not in present:
                        live.add(f"{rule.name}={rule.text}")
                    live.pause(rule.name, paused)
                except ConfigError as exc:  # more rules than a session takes
                    refused.append(refusal(exc))
            for name in self._removed:
                live.remove(name)
            self.desk, self.note = live, " ".join(refused)

    def html(self, alerts_on: Collection[str]) -> str:
        """The box's list: each rule's words, state and buttons; the last refusal under it."""
        with self._lock:
            listing, note = self.desk.listing(), self.note
        rows = "".join(rule_row(rule.name, rule.text, paused, rule.name in alerts_on) for rule, paused in listing)
        body = f'<ul class="rules">{rows}</ul>' if rows else EMPTY
        warn = f'<p class="rules-note" role="alert">{html.escape(note)}</p>' if note else ""
        return warn + body


def rule_row(name: str, text: str, paused: bool, alerting: bool) -> str:
    """One rule: its state (the page words "active" as watching while a session runs, ready before),
    its words and name, and its buttons, which carry the rule's name for the page to send back."""
    state = "paused" if paused else "alert" if alerting else "active"
    word = {"paused": "paused", "alert": "ALERT", "active": ""}[state]
    toggle = "resume" if paused else "pause"
    quoted = html.escape(name, quote=True)
    return (
        f'<li class="rule" data-rule="{quoted}" data-state="{state}">'
        f'<span class="rule-state">{word}</span>'
        f'<span class="rule-text" title="{html.escape(f"{text} (named {name})")}">{html.escape(text)}</span>'
        f'<button type="button" data-do="{toggle}" data-rule="{quoted}">{toggle.capitalize()}</button>'
        f'<button type="button" data-do="remove" data-rule="{quoted}" aria-label="Remove {html.escape(text)}">'
        "Remove</button></li>"
    )
