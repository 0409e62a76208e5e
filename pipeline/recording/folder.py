"""A recorded session's folder: where recordings live, the folder's name and files, and ``session.json``.

The folders are the truth: everything the History needs can be read back from them (the SQLite index is
a cache rebuilt from them). ``session.json`` is rewritten whole through a temporary file and a rename,
so a crash leaves the previous version, never half of one; it says ``"interrupted": true`` until the
session ends cleanly.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

META = "session.json"
EVENTS = "events.jsonl"
FORMAT_VERSION = 1


def default_record_dir() -> Path:
    """The user's data directory: ``$XDG_DATA_HOME/onlooker/sessions`` (``~/.local/share/…``) on Linux,
    ``~/Library/Application Support/onlooker/sessions`` on macOS, ``%LOCALAPPDATA%\\onlooker\\sessions``."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "onlooker" / "sessions"


def camera_file(camera_index: int, camera_id: str, stem: str, suffix: str) -> str:
    """A camera's file in the folder: ``subtitles.srt`` for the first camera, ``subtitles.<id>.srt`` after."""
    return f"{stem}{suffix}" if camera_index == 0 else f"{stem}.{camera_id}{suffix}"


def new_folder(root: Path, started: float, label: str) -> Path:
    """A new, empty session folder under ``root``, named by local start time and a label (unique)."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(started))
    root.mkdir(parents=True, exist_ok=True)
    for number in range(1, 1000):
        name = f"{stamp}_{label}" if number == 1 else f"{stamp}_{label}-{number}"
        try:
            (root / name).mkdir()
        except FileExistsError:
            continue
        return root / name
    raise FileExistsError(f"{root}: no free folder name for {stamp}_{label}")


@dataclass
class CameraMeta:
    """One camera of a recorded session, as its ``camera_start`` event said (credentials masked)."""

    id: str
    name: str
    source: str
    kind: str
    profile: str
    preset: str
    instructions: str
    backend: str
    speaks: bool
    # what → file name in the folder: events, srt, vtt, narration; video: a list of segments in order
    files: dict[str, Any] = field(default_factory=dict)


@dataclass
class SessionMeta:
    """``session.json``: what the History lists and the export needs."""

    id: str
    started: float  # Unix time
    ended: float | None = None
    interrupted: bool = True
    owner: str | None = None  # the login that ran it on a shared app; None: the machine's user
    cameras: list[CameraMeta] = field(default_factory=list)
    duration: float = 0.0  # media seconds, the longest camera's
    comments: int = 0  # kept comments
    alerts: int = 0
    errors: int = 0
    notes: list[str] = field(default_factory=list)  # what the recording could not do (a full disk, …)
    version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionMeta:
        cameras = [CameraMeta(**c) for c in data.get("cameras", [])]
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "cameras"}
        return cls(**known, cameras=cameras)


def write_meta(folder: Path, meta: SessionMeta) -> None:
    """Replace ``session.json`` whole (temporary file, fsync, rename)."""
    tmp = folder / f".{META}.tmp"
    with open(tmp, "w", encoding="utf-8") as file:
        json.dump(meta.to_json(), file, ensure_ascii=False, indent=1)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, folder / META)


def read_meta(folder: Path) -> SessionMeta:
    """``session.json`` of ``folder``; raises OSError or ValueError when it is missing or unreadable."""
    data = json.loads((folder / META).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{folder / META}: not a JSON object")
    return SessionMeta.from_json(data)
