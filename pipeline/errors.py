"""User-facing errors: one line that says what went wrong and what to do about it."""

from __future__ import annotations


class OnlookerError(Exception):
    """An error whose message is fit to show a user as is (CLI stderr, UI banner)."""


class ConfigError(OnlookerError):
    """A setting, preset or profile is invalid; the message names the file/variable and key."""


class SourceError(OnlookerError):
    """A video source cannot be opened or read."""


class BackendError(OnlookerError):
    """A model backend cannot be created or failed while generating.

    ``transient``: the engine is unreachable or overloaded for now (a server restarting, a network
    blip); the commentator reports it and tries again later instead of giving up on the session.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
