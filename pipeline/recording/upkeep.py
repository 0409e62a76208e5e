"""Keeping the recordings' folder in order: retention by age and size, said where people look.

Run at start (the CLI and the web app) and hourly by each recorder while it records. What retention
removed is appended to ``retention.log`` in the recordings' folder, one line per session, so the History
tab and the terminal can say it without any thread passing it along (the folder is the truth).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Set
from pathlib import Path

from pipeline.recording.history import HistoryIndex
from pipeline.recording.retention import GB, Removed, prune

log = logging.getLogger(__name__)

LOG = "retention.log"
EVERY = 3600.0  # seconds between a recorder's retention runs


def removal_line(removed: Removed) -> str:
    """One line a person reads: when, which session, its size and why (or why it could not go)."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    size = f"{removed.size / 1e6:,.1f} MB"
    if removed.removed:
        return f"{when} removed {removed.id} ({size}): {removed.why}"
    return f"{when} could not remove {removed.id} ({size}, {removed.why}): {removed.error}"


def tidy(root: Path, keep_days: float | None, max_gb: float | None, *, keep: Set[str] = frozenset()) -> list[str]:
    """Apply the retention limits to ``root`` (nothing without a limit); the lines written to the log."""
    if (keep_days is None and max_gb is None) or not root.is_dir():
        return []
    try:
        with HistoryIndex(root) as index:
            removed = prune(root, keep_days, round(max_gb * GB) if max_gb else None, keep=keep, index=index)
    except (OSError, sqlite3.Error) as exc:  # retention never stops a recording or a start
        log.warning("retention: %s could not be tidied: %s", root, exc)
        return []
    lines = [removal_line(r) for r in removed]
    if lines:
        try:
            with open(root / LOG, "a", encoding="utf-8") as file:
                file.write("".join(line + "\n" for line in lines))
        except OSError as exc:
            log.warning("retention: cannot write %s: %s", root / LOG, exc)
    return lines


def recent_removals(root: Path, count: int = 10) -> list[str]:
    """The newest lines of the retention log, newest last (none when nothing was ever removed)."""
    try:
        return (root / LOG).read_text(encoding="utf-8").splitlines()[-count:]
    except OSError:
        return []
