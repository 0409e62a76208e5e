"""Everything a run needs from files and settings, validated before any source or model is opened."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.backends.base import check_backend_name
from pipeline.config import PresetFile, Settings, Tuning, load_presets, pick
from pipeline.prompts import Profile, load_profiles
from pipeline.second_opinion import OpinionOptions
from pipeline.watch.rules import gather_rules


@dataclass(frozen=True)
class RunConfig:
    """Presets and profiles as loaded, plus the ones this run starts with."""

    presets: PresetFile
    profiles: dict[str, Profile]
    tuning: Tuning
    profile: Profile


def load_run_config(settings: Settings) -> RunConfig:
    """Check the backend name, presets and profiles; a mistake is a ConfigError naming where it is."""
    check_backend_name(settings.backend, lambda: settings.where("backend"))
    OpinionOptions.from_settings(settings)  # a second-opinion mistake stops the start, not the fifth comment
    presets = load_presets(settings.presets_file)
    profiles = load_profiles(settings.profiles_dir)
    profile = pick(settings.profile, profiles, "profile", lambda: settings.where("profile"))
    gather_rules(settings.watch, profile.watch, settings.rule_defaults(), profile.name)  # a bad rule stops the start
    return RunConfig(presets, profiles, settings.tuning(presets), profile)
