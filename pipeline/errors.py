"""User-facing errors: one line that says what went wrong and what to do about it."""

from __future__ import annotations


class OnlookerError(Exception):
    """An error whose message is fit to show a user as is (CLI stderr, UI banner)."""


class ConfigError(OnlookerError):
    """A setting, preset or profile is invalid; the message names the file/variable and key."""


class SourceError(OnlookerError):
    """A video source cannot be opened or read."""


class BackendError(OnlookerError):
    """A model backend cannot be created or failed while generating."""
