"""``--history`` and ``--history-search``: the recorded sessions in the terminal, one line each.

Reads the History's index (rebuilt from the session folders when it is missing or damaged), so it works
whether the sessions came from the web app or the CLI, on this machine's recordings folder
(``--record-dir``, else the user's data folder).
"""

from __future__ import annotations

import time
from typing import TextIO

from pipeline.config import Settings
from pipeline.events import clock
from pipeline.recording.folder import default_record_dir
from pipeline.recording.history import HistoryIndex, SessionRow


def session_line(row: SessionRow) -> str:
    """Date, length, counts, state and source of a session, then its folder."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.started))
    state = "  interrupted" if row.interrupted else ""
    alerts = f", {row.alerts} alert{'s' * (row.alerts != 1)}" if row.alerts else ""
    counts = f"{row.comments} comment{'s' * (row.comments != 1)}{alerts}"
    return f"{when}  {clock(row.duration):>9}  {counts:<24}{state}  {row.source}  ({row.folder})"


def show_history(settings: Settings, out: TextIO) -> int:
    """Print the sessions (newest first) or the comments matching ``--history-search``; 0, or 1 for none."""
    root = settings.record_dir or default_record_dir()
    with HistoryIndex(root) as index:
        index.catch_up()
        if settings.history_search is not None:
            hits = index.search(settings.history_search, any_owner=True)
            for hit in hits:
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(hit.session_started))
                out.write(f"{when}  [{clock(hit.t)}] {hit.camera_name}: {hit.snippet}  ({hit.session_id})\n")
            if not hits:
                out.write(f"no comment in {root} matches {settings.history_search!r}\n")
            return 0 if hits else 1
        rows = index.sessions(any_owner=True)
        for row in rows:
            out.write(session_line(row) + "\n")
        if not rows:
            out.write(f"no recorded sessions in {root} yet\n")
        return 0
