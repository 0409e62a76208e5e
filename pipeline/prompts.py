"""Profiles (``profiles/*.yaml``: who is speaking) and assembly of the prompt for one comment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.config import PROFILES_DIR, load_yaml_model
from pipeline.errors import ConfigError
from pipeline.watch.rules import RuleEntry


class Voice(BaseModel):
    """Hints for speech engines; each engine uses what it understands."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine_voice: str = "en-us"
    rate: int = Field(170, ge=60, le=450, description="words per minute")
    pitch: int = Field(50, ge=0, le=99)
    reference_audio: str | None = None


class Profile(BaseModel):
    """A commentator personality: what to watch for and how to say it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    system_prompt: str = Field(min_length=1)
    style: str = ""
    max_tokens: int = Field(60, ge=4, le=1024)
    temperature: float = Field(0.7, ge=0, le=2)
    language: str = Field("en", pattern=r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")
    stop: list[str] = Field(default_factory=list, max_length=4, description="strings that end a comment early")
    voice: Voice = Voice()
    watch: list[RuleEntry] = Field(default_factory=list, description="watch rules this profile starts with")

    @field_validator("watch", mode="before")
    @classmethod
    def _plain_rules(cls, items: object) -> object:
        """A rule may be written as its words alone."""
        return [{"text": item} if isinstance(item, str) else item for item in items or []]


def load_profiles(directory: Path = PROFILES_DIR) -> dict[str, Profile]:
    """Every ``*.yaml`` in ``directory`` keyed by file stem; a broken file is an error, not a skip."""
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise ConfigError(f"{directory}: no profile files (*.yaml) found")
    return {f.stem.lower(): load_yaml_model(f, Profile) for f in files}


@dataclass(frozen=True, slots=True)
class PromptParts:
    """The text half of a backend request; the frames travel beside it."""

    system: str
    user: str


def build_prompt(
    profile: Profile,
    *,
    frame_count: int,
    span_seconds: float,
    recent: list[str],
    instructions: list[str],
    trigger: str,
    outage: float = 0.0,
) -> PromptParts:
    """Compose system and user text from the profile, recent comments and live instructions."""
    system = profile.system_prompt.strip()
    if profile.style:
        system += f"\nStyle: {profile.style.strip()}"
    if profile.language != "en":
        system += f"\nAlways answer in the language with code '{profile.language}'."
    lines = []
    if frame_count > 1:
        lines.append(f"These {frame_count} frames cover the last {span_seconds:.0f} s of a live video, oldest first.")
    else:
        lines.append("This is the current frame of a live video.")
    if trigger == "feed_back":
        lines.append(
            f"The video feed was cut off for about {max(outage, 1):.0f} s and has just come back: "
            "say so in a few words, then talk about what you see now."
        )
    elif trigger == "scene_cut":
        lines.append("The scene just changed: talk about the new scene.")
    elif trigger == "heartbeat":
        lines.append("The picture has been still for a while: mention anything that is different, or reply '...'.")
    if recent:
        lines.append("You already said (do not repeat it):")
        lines.extend(f"- {text}" for text in recent)
    if instructions:
        lines.append("The viewer asks you to: " + "; ".join(instructions))
    lines.append("Comment on what is happening now. If nothing new is happening, reply with '...' only.")
    return PromptParts(system=system, user="\n".join(lines))
