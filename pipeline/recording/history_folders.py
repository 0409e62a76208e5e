"""What a recorded session folder puts in the History's index, read from ``session.json`` and ``events.jsonl``.

Kept apart from the SQLite index so that reading a folder (the slow, disk-bound part) happens before the
database is touched, and so the index only ever inserts values already made safe for SQLite here.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.recording.folder import EVENTS, META, SessionMeta, read_meta

log = logging.getLogger(__name__)

_EVENT_TYPES = (b'"commentary_end"', b'"alert"', b'"error"')  # the lines worth parsing


@dataclass
class FolderRecord:
    """What one session folder puts in the index, read before the database is touched."""

    row: tuple[Any, ...]
    comments: list[tuple[Any, ...]] = field(default_factory=list)
    alerts: list[tuple[Any, ...]] = field(default_factory=list)


def _text(value: object) -> str:
    """A string from JSON as SQLite can store it: a lone surrogate (``"\\ud800"``) would not encode."""
    if not isinstance(value, str):
        return ""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


def _number(value: object) -> float | None:
    """A finite number from JSON (``NaN`` would be stored as NULL), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _camera(value: object, names: dict[str, str]) -> tuple[str, str]:
    """An event's ``camera`` ({id, name} or null) as (id, name); a missing name from session.json."""
    if not isinstance(value, dict):
        return "", ""
    camera_id = _text(value.get("id"))
    return camera_id, _text(value.get("name")) or names.get(camera_id, camera_id)


def _events(path: Path) -> Iterator[dict[str, Any]]:
    """The events of ``events.jsonl`` that the index keeps; a line that is not a whole JSON object (the
    last one of a crashed session, say) is skipped, and so is a file that cannot be read."""
    try:
        with open(path, "rb") as file:
            for line in file:
                if not any(kind in line for kind in _EVENT_TYPES):
                    continue
                try:
                    event = json.loads(line)
                except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                    continue
                if isinstance(event, dict):
                    yield event
    except OSError as exc:
        if not isinstance(exc, FileNotFoundError):
            log.warning("history: %s could not be read to its end: %s", path, exc)


def read_folder(folder: Path) -> FolderRecord:
    """A session folder's row, kept comments and alerts. ``session.json`` of a session that was cut off is
    up to 10 s behind its ``events.jsonl``: counts and duration are the larger of the two."""
    meta: SessionMeta = read_meta(folder)
    session_id = folder.name
    names = {camera.id: camera.name for camera in meta.cameras}
    comments: list[tuple[Any, ...]] = []
    alerts: list[tuple[Any, ...]] = []
    errors, alerts_started, latest = 0, 0, 0.0
    for event in _events(folder / EVENTS):
        t = _number(event.get("t"))
        if t is None:
            continue
        kind = event.get("type")
        if kind == "commentary_end":
            text, comment_id = _text(event.get("text")), event.get("comment_id")
            if event.get("suppressed") or not text.strip():
                continue
            if isinstance(comment_id, bool) or not isinstance(comment_id, int) or abs(comment_id) >= 2**63:
                continue
            camera_id, camera_name = _camera(event.get("camera"), names)
            comments.append((session_id, camera_id, camera_name, comment_id, t, text))
        elif kind == "alert":
            camera_id, camera_name = _camera(event.get("camera"), names)
            state, snapshot = _text(event.get("state")), event.get("snapshot")
            alerts_started += state == "started"
            alerts.append(
                (
                    session_id,
                    camera_id,
                    camera_name,
                    _text(event.get("rule")),
                    state,
                    t,
                    _number(event.get("confidence")),
                    _text(event.get("reason")),
                    _text(snapshot) or None,
                )
            )
        elif kind == "error":
            errors += 1
        else:
            continue
        latest = max(latest, t)
    first = meta.cameras[0] if meta.cameras else None
    row = (
        session_id,
        str(folder),
        meta.started,
        meta.ended,
        max(meta.duration, latest),
        int(meta.interrupted),
        meta.owner,
        first.source if first else "",
        json.dumps([camera.name for camera in meta.cameras], ensure_ascii=False),
        max(meta.comments, len(comments)),
        max(meta.alerts, alerts_started),
        max(meta.errors, errors),
        first.backend if first else "",
        first.profile if first else "",
        first.preset if first else "",
    )
    return FolderRecord(row, comments, alerts)


def read_folders(root: Path) -> list[FolderRecord]:
    """Every folder under ``root`` with a ``session.json``, read; one that cannot be read is left out."""
    records: list[FolderRecord] = []
    if not root.is_dir():
        return records
    for folder in sorted(root.iterdir()):
        if not (folder.is_dir() and (folder / META).is_file()):
            continue
        try:
            records.append(read_folder(folder))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("history: %s left out: %s", folder, exc)
    return records
