"""The History tab: every recorded session, searchable, with its narrated video, transcript and files.

Who sees what: on the app at home (loopback, not shared) every session in the recordings' folder, the
CLI's included. On a shared app (``--share`` or a non-loopback ``--host``) each visitor sees only the
sessions recorded under their own login (``--auth``); without a login the tab is off and says why, since
anyone with the link would otherwise see every camera's history. The tab hands files to the page as copies
in Gradio's cache (unguessable names), never by opening the recordings' folder to the web.
"""

from __future__ import annotations

import html
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from pipeline.config import Settings
from pipeline.errors import OnlookerError
from pipeline.events import clock
from pipeline.recording.export import export_session
from pipeline.recording.folder import default_record_dir, read_meta
from pipeline.recording.history import Comment, HistoryIndex, SessionRow
from pipeline.recording.upkeep import recent_removals
from pipeline.space import is_exposed

NARRATED = "narrated.mp4"  # the export made from the History tab, kept in the session's folder
SESSION_COLUMNS = ["Date", "Source", "Length", "Comments", "Alerts", "State"]
HIT_COLUMNS = ["Date", "At", "Camera", "Comment"]


@dataclass(frozen=True)
class HistoryAccess:
    """The recordings' folder and who may see what in it (see the module doc)."""

    root: Path
    shared: bool
    off_because: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> HistoryAccess:
        root = settings.record_dir or default_record_dir()
        shared = is_exposed(settings)
        if not settings.record:
            return cls(root, shared, "Sessions are not being recorded (--no-record), so there is no history to show.")
        if shared and not settings.auth:
            return cls(
                root,
                shared,
                "History is off on a shared app without a login: anyone with the link would see every session. "
                "Start the app with --auth user:password and each visitor sees only their own sessions.",
            )
        return cls(root, shared)

    def scope(self, login: str | None) -> dict[str, Any]:
        """The index's owner filter for a visitor: everything at home, one's own sessions when shared."""
        return {"owner": login, "any_owner": False} if self.shared else {"owner": None, "any_owner": True}

    def may_see(self, row: SessionRow | None, login: str | None) -> bool:
        return row is not None and (not self.shared or row.owner == login)


def _when(started: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(started))


def session_table(access: HistoryAccess, login: str | None) -> tuple[list[list[Any]], list[str]]:
    """The visitor's sessions, newest first, as table rows, and their ids in the same order."""
    with HistoryIndex(access.root) as index:
        index.catch_up()
        rows = index.sessions(**access.scope(login))
    table = [
        [
            _when(r.started),
            r.source,
            clock(r.duration),
            r.comments,
            r.alerts,
            "interrupted" if r.interrupted else "complete",
        ]
        for r in rows
    ]
    return table, [r.id for r in rows]


def search_table(access: HistoryAccess, login: str | None, words: str) -> tuple[list[list[Any]], list[str]]:
    """Comments matching ``words`` in the visitor's sessions, and each one's session id."""
    with HistoryIndex(access.root) as index:
        hits = index.search(words, **access.scope(login))
    return [[_when(h.session_started), clock(h.t), h.camera_name, h.snippet] for h in hits], [
        h.session_id for h in hits
    ]


def notice(access: HistoryAccess) -> str:
    """What retention removed lately, in a line or a few."""
    lines = recent_removals(access.root, 5)
    return ("Removed by retention: " + "; ".join(lines)) if lines else ""


def _visible_row(index: HistoryIndex, access: HistoryAccess, login: str | None, session_id: str) -> SessionRow:
    row = index.session(session_id) if session_id else None
    if row is None or not access.may_see(row, login):
        raise gr.Error("That session is not in your history (it may have been deleted).", print_exception=False)
    return row


def transcript_html(comments: list[Comment]) -> str:
    if not comments:
        return '<p class="small-note">No comment was kept in this session.</p>'
    items = "".join(f'<li><span class="clock">{clock(c.t)}</span> {html.escape(c.text)}</li>' for c in comments)
    return f'<ol class="transcript">{items}</ol>'


def session_files(folder: Path) -> list[Path]:
    """The session's downloads: the narrated MP4 if made, subtitles, events, narration audio."""
    names = [NARRATED, "subtitles.srt", "subtitles.vtt", "events.jsonl", "narration.ogg"]
    return [folder / name for name in names if (folder / name).is_file()]


def open_session(
    access: HistoryAccess, login: str | None, session_id: str
) -> tuple[str, tuple[Path, Path | None] | None, str, list[Path]]:
    """A session's page: title, its narrated video with subtitles (once made), transcript, downloads."""
    with HistoryIndex(access.root) as index:
        row = _visible_row(index, access, login, session_id)
        comments = index.comments(session_id)
    title = (
        f"### {html.escape(row.source)}\n{_when(row.started)} · {clock(row.duration)} · {row.comments} comments · "
        f"{row.alerts} alerts · {'interrupted' if row.interrupted else 'complete'} · {html.escape(row.backend)}"
    )
    return title, _video(row.folder), transcript_html(comments), session_files(row.folder)


def _video(folder: Path) -> tuple[Path, Path | None] | None:
    """The narrated MP4 and its WebVTT subtitles (None until the video is made)."""
    if not (folder / NARRATED).is_file():
        return None
    subtitles = folder / "subtitles.vtt"
    return folder / NARRATED, subtitles if subtitles.is_file() else None


def make_video(
    access: HistoryAccess, login: str | None, session_id: str
) -> tuple[tuple[Path, Path | None], list[Path]]:
    """Export the session as a narrated MP4 into its folder (once), then show and offer it."""
    with HistoryIndex(access.root) as index:
        row = _visible_row(index, access, login, session_id)
    if not (row.folder / NARRATED).is_file():
        try:
            result = export_session(row.folder, row.folder / NARRATED)
        except OnlookerError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        for note in result.notes:
            gr.Info(note)
    video = _video(row.folder)
    assert video is not None
    return video, session_files(row.folder)


def delete_session(access: HistoryAccess, login: str | None, session_id: str) -> None:
    """Remove the session's folder and forget it."""
    with HistoryIndex(access.root) as index:
        row = _visible_row(index, access, login, session_id)
        try:
            read_meta(row.folder)  # only ever a session folder
            shutil.rmtree(row.folder)
        except (OSError, ValueError) as exc:
            raise gr.Error(f"Could not delete the session: {exc}", print_exception=False) from None
        index.remove(session_id)
