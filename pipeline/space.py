"""Running as a Hugging Face Space: recognised from the variables the Space sets, and what changes then.

A Space is a public web app behind Hugging Face's proxy: it must listen on 0.0.0.0:7860, it is shared
(the URL guard is on, whatever the host says), and it should have a login, which the owner sets as the
secret ``ONLOOKER_AUTH``. On ZeroGPU hardware the GPU is lent per call, with a daily quota: a live
session holds the model for as long as it watches, which ZeroGPU does not give, so the app says so
instead of failing in the middle of a session. Flags and ``ONLOOKER_*`` variables still win.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.sources.addresses import is_loopback  # not guard: that loads httpx, which a start need not wait for

if TYPE_CHECKING:
    from pipeline.config import Settings

SPACE_PORT = 7860


@dataclass(frozen=True, slots=True)
class Space:
    """The Space this process runs in."""

    id: str  # owner/name
    zero_gpu: bool  # ZeroGPU hardware: the GPU is lent per call


def detect_space(environ: Mapping[str, str] = os.environ) -> Space | None:
    """The Space we run in, from the variables every Space sets (``SYSTEM=spaces``, ``SPACE_ID``), or None."""
    if environ.get("SYSTEM") != "spaces" and not environ.get("SPACE_ID"):
        return None
    zero = environ.get("SPACES_ZERO_GPU", "").strip().lower() not in ("", "0", "false", "no")
    return Space(environ.get("SPACE_ID", "") or "this Space", zero)


def space_overrides(space: Space | None, given: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> dict:
    """Where a Space must listen, unless a flag or an ``ONLOOKER_*`` variable says otherwise."""
    if space is None:
        return {}
    defaults = {"host": "0.0.0.0", "port": SPACE_PORT}  # the Space's proxy reaches the app there
    return {
        key: value
        for key, value in defaults.items()
        if given.get(key) is None and f"ONLOOKER_{key.upper()}" not in environ
    }


def is_exposed(settings: Settings, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether others can reach the app: a share link, a non-loopback host, or a Space (always public)."""
    return settings.share or not is_loopback(settings.host) or detect_space(environ) is not None


def space_notes(space: Space, has_login: bool) -> list[str]:
    """What the Space's owner must know, for the log and the page."""
    notes = [f"running as the Hugging Face Space {space.id}: shared, listening on 0.0.0.0"]
    if not has_login:
        notes.append(
            "this Space has no login: anyone can watch its cameras and use its GPU. In the Space's Settings, add the "
            "secret ONLOOKER_AUTH = user:password (several: u1:p1,u2:p2) and restart it"
        )
    if space.zero_gpu:
        notes.append(
            "this Space runs on ZeroGPU, which lends the GPU per call with a daily quota: continuous live commentary "
            "needs a dedicated GPU. In the Space's Settings pick GPU hardware (an L4 or L40S), or point it at an "
            "engine with ONLOOKER_BASE_URL"
        )
    return notes
