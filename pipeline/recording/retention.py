"""Retention: old recordings go, oldest first, so the recordings' folder neither grows for ever nor fills
the disk.

First every session started more than ``keep_days`` ago, then, while all session folders together are
over ``max_bytes``, the oldest that is left. A session still recording is never touched: the caller names
its own (``keep``), and one that another process is recording (a CLI beside the app, on the same root) is
recognised by its files: ``session.json`` says interrupted and it or ``events.jsonl`` changed within
``LIVE_S`` (the recorder rewrites ``session.json`` every 10 s and flushes every event). Only folders with
a readable ``session.json`` are sessions; anything else under the root is neither counted nor removed.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path

from pipeline.recording.folder import EVENTS, META, read_meta
from pipeline.recording.history import HistoryIndex

log = logging.getLogger(__name__)

DAY_S = 86_400.0
GB = 1_000_000_000  # disk makers' gigabytes, as a disk's free space is shown to people
LIVE_S = 120.0  # an interrupted session whose files changed this recently is being recorded


@dataclass(frozen=True, slots=True)
class Removed:
    """A session folder that retention removed, or tried to (``error`` says why it is still there)."""

    id: str
    started: float  # Unix time
    size: int  # bytes, before removal
    why: str  # "older than 30 days", "over the 5 GB limit"
    error: str = ""

    @property
    def removed(self) -> bool:
        return not self.error


@dataclass
class _Session:
    folder: Path
    started: float
    size: int
    live: bool


def folder_size(path: Path) -> int:
    """Bytes of everything under ``path``: files, and links as links (never followed, so nothing is counted
    twice or outside); what vanishes meanwhile or cannot be read counts as nothing."""
    total, folders = 0, [path]
    while folders:
        try:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            folders.append(Path(entry.path))
                        else:
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def _limit_words(max_bytes: int) -> str:
    return f"over the {max_bytes / GB:g} GB limit"


def _age_words(keep_days: float) -> str:
    return f"older than {keep_days:g} day{'' if keep_days == 1 else 's'}"


def _sessions(root: Path, now: float) -> list[_Session]:
    """The session folders under ``root``, oldest first."""
    sessions = []
    if not root.is_dir():
        return sessions
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        try:
            meta = read_meta(folder)
        except (OSError, ValueError, TypeError):
            continue  # not a session (or not one this code can read): never ours to remove
        if isinstance(meta.started, bool) or not isinstance(meta.started, int | float):
            continue
        changed = 0.0
        for name in (META, EVENTS):
            try:
                changed = max(changed, (folder / name).stat().st_mtime)
            except OSError:
                continue
        live = meta.interrupted and now - changed < LIVE_S
        sessions.append(_Session(folder, meta.started, folder_size(folder), live))
    sessions.sort(key=lambda s: (s.started, s.folder.name))
    return sessions


def prune(
    root: Path,
    keep_days: float | None,
    max_bytes: int | None,
    *,
    now: float | None = None,
    keep: Set[str] = frozenset(),
    index: HistoryIndex | None = None,
) -> list[Removed]:
    """Remove old session folders under ``root``: started more than ``keep_days`` ago, then the oldest while
    all of them take more than ``max_bytes`` (either None: no such limit). Sessions named in ``keep`` and
    those being recorded stay. Returns what went, oldest first, and what could not (``error``); ``index``
    forgets each session whose folder is gone. ``now``: the clock, Unix time."""
    now = time.time() if now is None else now
    sessions = _sessions(root, now)
    total = sum(s.size for s in sessions)
    removable = [s for s in sessions if s.folder.name not in keep and not s.live]
    out: list[Removed] = []

    def remove(session: _Session, why: str) -> None:
        nonlocal total
        error = ""
        try:
            shutil.rmtree(session.folder)
        except OSError as exc:
            error = f"{exc.strerror or exc}: {getattr(exc, 'filename', None) or session.folder}"
            log.warning("retention: %s could not be removed: %s", session.folder, error)
        left = folder_size(session.folder) if session.folder.exists() else 0
        total -= session.size - left
        out.append(Removed(session.folder.name, session.started, session.size, why, error))
        if index is not None and not (session.folder / META).exists():
            index.remove(session.folder.name)

    if keep_days is not None:
        cutoff = now - keep_days * DAY_S
        for session in [s for s in removable if s.started < cutoff]:
            removable.remove(session)
            remove(session, _age_words(keep_days))
    if max_bytes is not None:
        for session in list(removable):
            if total <= max_bytes:
                break
            remove(session, _limit_words(max_bytes))
    return out
