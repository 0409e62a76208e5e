"""Watch rules: plain-language conditions ("a person is at the front door") a camera is checked for.

A rule comes from ``--watch "TEXT"`` or ``--watch "NAME=TEXT"`` (repeatable; ``ONLOOKER_WATCH`` takes
several, one per line or separated by ``;``), from a profile's ``watch:`` list (where each rule may also
set its own cooldown, confirmation and clearing), or from the web page while a session runs. Its name
is a slug of its words unless given: MQTT topics, Home Assistant entities and the events file key on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import ConfigError

MAX_RULES = 16
MAX_TEXT = 200
_FILLER = frozenset(
    {"a", "an", "the", "is", "are", "at", "in", "on", "of", "to", "by", "some"} | {"there", "it", "its", "has", "have"}
)
_NAMED = re.compile(r"^\s*([^=\s][^=]{0,39}?)\s*=\s*(.*)$", re.DOTALL)  # NAME=TEXT; the name is checked after


def rule_slug(text: str) -> str:
    """A short, topic- and file-safe name from a rule's words ("a person is at the door" → person-door)."""
    words = [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _FILLER]
    return "-".join(words)[:40].strip("-") or "rule"


class RuleDefaults(BaseModel):
    """What a rule does when it does not say: from ``--watch-cooldown``, ``--watch-confirm`` and friends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cooldown: float = Field(60.0, ge=0, le=86_400, description="seconds before the rule may alert again on a camera")
    confirm: int = Field(1, ge=1, le=20, description="consecutive yes answers that confirm an alert")
    clear: int = Field(2, ge=1, le=100, description="consecutive no answers after which the alert is cleared")
    min_confidence: float = Field(0.5, ge=0, le=1, description="a yes less sure than this counts as a no")


class WatchRule(RuleDefaults):
    """One rule: its name, its words, and (from the defaults unless set) how it alerts and clears."""

    name: str = Field(pattern=r"^[A-Za-z0-9][\w-]{0,39}$")
    text: str = Field(min_length=1, max_length=MAX_TEXT)

    @field_validator("text")
    @classmethod
    def _one_line(cls, text: str) -> str:
        return " ".join(text.split())


class RuleEntry(BaseModel):
    """A profile's ``watch:`` item: a plain string, or a mapping that may set the rule's own numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1, max_length=MAX_TEXT)
    name: str | None = None
    cooldown: float | None = Field(None, ge=0, le=86_400)
    confirm: int | None = Field(None, ge=1, le=20)
    clear: int | None = Field(None, ge=1, le=100)
    min_confidence: float | None = Field(None, ge=0, le=1)


_OWN = tuple(RuleDefaults.model_fields)  # what a rule may set for itself


def parse_rule(given: str, defaults: RuleDefaults, where: str = "--watch") -> WatchRule:
    """``TEXT`` or ``NAME=TEXT`` as a rule; a problem is a ConfigError that says what is allowed."""
    given = given.strip()
    named = _NAMED.match(given)
    name, text = (named.group(1), named.group(2)) if named else (None, given)
    entry = RuleEntry.model_construct(text=text, name=name)  # checked in make_rule
    return make_rule(entry, defaults, where, given)


def make_rule(entry: RuleEntry | None, defaults: RuleDefaults, where: str, given: str = "") -> WatchRule:
    if entry is None or not entry.text.strip():
        raise ConfigError(f'{where}: an empty rule; say what to watch for, e.g. --watch "door=a person at the door"')
    own = {k: v for k in _OWN if (v := getattr(entry, k)) is not None}
    try:
        return WatchRule(**{**defaults.model_dump(), **own}, name=entry.name or rule_slug(entry.text), text=entry.text)
    except ValidationError as exc:
        problem = exc.errors()[0]
        key = problem["loc"][0] if problem["loc"] else "rule"
        hint = " (a name is letters, digits, - and _, up to 40)" if key == "name" else ""
        raise ConfigError(f"{where}: '{given or entry.text}': {key}: {problem['msg']}{hint}") from None


def split_rules(value: str) -> list[str]:
    """``ONLOOKER_WATCH``: several rules, one per line or separated by ';'."""
    return [part.strip() for part in re.split(r"[;\n]", value) if part.strip()]


def gather_rules(
    given: Sequence[str], profile_rules: Iterable[RuleEntry], defaults: RuleDefaults, profile: str = ""
) -> list[WatchRule]:
    """The run's rules: the profile's, then the flags'; two rules with one name are a ConfigError."""
    rules = [make_rule(entry, defaults, f"profile {profile}: watch") for entry in profile_rules]
    rules += [parse_rule(text, defaults) for text in given]
    check_rules(rules)
    return rules


def check_rules(rules: Sequence[WatchRule]) -> None:
    """At most ``MAX_RULES``, names unique (a name is a topic and an entity)."""
    if len(rules) > MAX_RULES:
        raise ConfigError(f"--watch: {len(rules)} rules; at most {MAX_RULES} (each is a question every check)")
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise ConfigError(
                f"--watch: two rules are named '{rule.name}'; name them apart with NAME=TEXT "
                f'(e.g. --watch "{rule.name}-2={rule.text}")'
            )
        seen.add(rule.name)
