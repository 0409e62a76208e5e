"""The History's index: every recorded session, its kept comments and its alerts in one SQLite file.

The session folders are the truth; ``history.sqlite3`` in the recordings' root is a cache that lists and
searches them quickly, and it can always be made again from them (``rebuild``). So a missing file, a
damaged one (not a database, a failed ``quick_check``, corruption found later) or one with another
schema version is never an error: it is moved aside (damaged) or deleted (another version) and rebuilt
from the folders.

Decisions:

* **One connection, ``check_same_thread=False``, behind a lock**: the page's handlers run on a pool of
  changing threads and the recorder adds from its own. Per-thread connections would pile up, one per
  pool thread, with no moment to close them, and recovering from a damaged file would have to reach
  each of them. Every call here takes milliseconds, so serialising them in one process costs nothing
  a person notices.
* **Words are searched as typed, never as FTS syntax**: each word is quoted (``"`` doubled) and matched
  as a prefix (``"dog"*`` finds *dogs*), words side by side must all occur; ``AND``, ``NEAR(``, ``-``
  or ``*`` are just words, so nothing a user types can raise.
"""

from __future__ import annotations

import html
import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pipeline.recording.folder import META
from pipeline.recording.history_db import (
    DROP,
    SCHEMA,
    SCHEMA_VERSION,
    SESSION_COLUMNS,
    connect,
    delete_file,
    is_damage,
    move_aside,
    transaction,
)
from pipeline.recording.history_folders import FolderRecord, read_folder, read_folders

log = logging.getLogger(__name__)

DB_NAME = "history.sqlite3"
SNIPPET_TOKENS = 16
_MARK = ("\x02", "\x03")  # snippet markers that never occur in comment text, replaced per format

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One session as the History lists it; ``source``, ``backend``, ``profile`` and ``preset`` are the
    first camera's (the source already masked by the recorder)."""

    id: str
    folder: Path
    started: float
    ended: float | None
    duration: float
    interrupted: bool
    owner: str | None
    source: str
    cameras: tuple[str, ...]  # camera names, in start order
    comments: int
    alerts: int
    errors: int
    backend: str
    profile: str
    preset: str


@dataclass(frozen=True, slots=True)
class Comment:
    """A kept comment of a session's transcript, at its media time."""

    session_id: str
    camera_id: str
    camera_name: str
    comment_id: int
    t: float
    text: str


@dataclass(frozen=True, slots=True)
class Hit:
    """A comment a search found: ``snippet`` marks the matched words with ``[`` and ``]``, ``snippet_html``
    is the same part escaped for a page with them in ``<mark>``."""

    session_id: str
    session_started: float
    camera_id: str
    camera_name: str
    comment_id: int
    t: float
    text: str
    snippet: str
    snippet_html: str


@dataclass(frozen=True, slots=True)
class Alert:
    """An ``alert`` event of a session: a rule that ``started`` or ``cleared`` on a camera."""

    session_id: str
    camera_id: str
    camera_name: str
    rule: str
    state: str
    t: float
    confidence: float | None
    reason: str
    snapshot: str | None  # a file in the session's folder


def match_query(words: str) -> str | None:
    """The user's words as an FTS5 query that cannot be a syntax error: each word quoted (``"`` doubled)
    and matched as a prefix, all of them required; None when no word has a letter or digit."""
    terms = ['"' + word.replace('"', '""') + '"*' for word in words.split() if any(ch.isalnum() for ch in word)]
    return " ".join(terms) or None


def _session_row(row: tuple[Any, ...]) -> SessionRow:
    names = json.loads(row[8])
    return SessionRow(
        id=row[0],
        folder=Path(row[1]),
        started=row[2],
        ended=row[3],
        duration=row[4],
        interrupted=bool(row[5]),
        owner=row[6],
        source=row[7],
        cameras=tuple(names) if isinstance(names, list) else (),
        comments=row[9],
        alerts=row[10],
        errors=row[11],
        backend=row[12],
        profile=row[13],
        preset=row[14],
    )


def _owner_clause(owner: str | None, any_owner: bool) -> tuple[str, tuple[Any, ...]]:
    """``owner`` None is the machine's own user (sessions recorded without a login), not everyone."""
    if any_owner:
        return "1", ()
    if owner is None:
        return "s.owner IS NULL", ()
    return "s.owner = ?", (owner,)


class HistoryIndex:
    """The recorded sessions under ``root``, indexed in ``root/history.sqlite3``; safe to share between
    threads. Opening it repairs it: a missing, damaged or other-version file is rebuilt from the folders."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / DB_NAME
        self._lock = threading.RLock()
        root.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = self._open()

    # --- writing ---
    def add(self, folder: Path) -> None:
        """Index (or index again) one session folder, replacing what the index had for it. Raises OSError
        or ValueError when its ``session.json`` is missing or unreadable; bad event lines are skipped."""
        try:
            record = read_folder(folder)
        except TypeError as exc:  # session.json without an id or start
            raise ValueError(f"{folder / META}: {exc}") from None

        def work(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                self._delete_session(conn, record.row[0])
                self._insert(conn, record)

        self._use(work)

    def remove(self, session_id: str) -> None:
        """Forget one session (its folder was deleted); unknown ids are ignored."""

        def work(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                self._delete_session(conn, session_id)

        self._use(work)

    def rebuild(self) -> int:
        """Drop the index and make it again from every folder under ``root`` with a ``session.json`` (others
        are ignored, and so is one whose ``session.json`` cannot be read); returns how many it holds."""
        records = read_folders(self.root)
        self._use(lambda conn: self._fill(conn, records))
        return len(records)

    # --- reading ---
    def catch_up(self) -> int:
        """Index the session folders the index does not have yet (a recorder could not write to it: a full
        disk, another process holding it); returns how many were added. Cheap: a folder listing and a query."""
        known = set(self._use(lambda conn: [row[0] for row in conn.execute("SELECT id FROM sessions")]))
        added = 0
        folders = sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        for folder in folders:
            if folder.name not in known and (folder / META).is_file():
                try:
                    self.add(folder)
                    added += 1
                except (OSError, ValueError):
                    continue  # not readable (yet): the next look tries again
        return added

    def sessions(self, owner: str | None = None, *, any_owner: bool = False) -> list[SessionRow]:
        """Sessions newest first: ``owner``'s only (None: those recorded without a login), or everyone's
        with ``any_owner`` — a shared app shows a visitor only what they recorded."""
        where, args = _owner_clause(owner, any_owner)
        sql = f"SELECT {SESSION_COLUMNS} FROM sessions s WHERE {where} ORDER BY s.started DESC, s.id DESC"
        return self._use(lambda conn: [_session_row(row) for row in conn.execute(sql, args)])

    def session(self, session_id: str) -> SessionRow | None:
        """One session's row, or None when the index does not know it."""
        sql = f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?"
        row = self._use(lambda conn: conn.execute(sql, (session_id,)).fetchone())
        return _session_row(row) if row else None

    def comments(self, session_id: str) -> list[Comment]:
        """A session's transcript: its kept comments in media-time order."""
        sql = (
            "SELECT session_id, camera_id, camera_name, comment_id, t, text FROM comments "
            "WHERE session_id = ? ORDER BY t, id"
        )
        return self._use(lambda conn: [Comment(*row) for row in conn.execute(sql, (session_id,))])

    def alerts(self, session_id: str) -> list[Alert]:
        """A session's alert events (started and cleared) in media-time order."""
        sql = (
            "SELECT session_id, camera_id, camera_name, rule, state, t, confidence, reason, snapshot "
            "FROM alerts WHERE session_id = ? ORDER BY t, id"
        )
        return self._use(lambda conn: [Alert(*row) for row in conn.execute(sql, (session_id,))])

    def search(self, words: str, owner: str | None = None, *, any_owner: bool = False, limit: int = 200) -> list[Hit]:
        """Kept comments that hold every word (as typed, each a prefix), newest session first, then by
        media time; the same owner rule as ``sessions``. Empty when no word has a letter or digit."""
        query = match_query(words)
        if query is None:
            return []
        where, args = _owner_clause(owner, any_owner)
        sql = (
            "SELECT c.session_id, s.started, c.camera_id, c.camera_name, c.comment_id, c.t, c.text, "
            f"snippet(comments_fts, 0, ?, ?, '…', {SNIPPET_TOKENS}) "
            "FROM comments_fts JOIN comments c ON c.id = comments_fts.rowid JOIN sessions s ON s.id = c.session_id "
            f"WHERE comments_fts MATCH ? AND {where} "
            "ORDER BY s.started DESC, s.id DESC, c.t, c.comment_id LIMIT ?"
        )

        def work(conn: sqlite3.Connection) -> list[Hit]:
            return [self._hit(row) for row in conn.execute(sql, (*_MARK, query, *args, limit))]

        return self._use(work)

    def close(self) -> None:
        """Close the connection; a later call opens it again."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> HistoryIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- inside ---
    @staticmethod
    def _hit(row: tuple[Any, ...]) -> Hit:
        raw: str = row[7] or ""
        plain = raw.replace(_MARK[0], "[").replace(_MARK[1], "]")
        marked = html.escape(raw).replace(_MARK[0], "<mark>").replace(_MARK[1], "</mark>")
        return Hit(*row[:7], snippet=plain, snippet_html=marked)

    def _use(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on the connection, under the lock; a file found damaged meanwhile is rebuilt from the
        folders and ``work`` runs once more on the new one."""
        with self._lock:
            if self._conn is None:
                self._conn = self._open()
            try:
                return work(self._conn)
            except sqlite3.DatabaseError as exc:
                if not is_damage(exc):
                    raise
                log.warning("history index %s is damaged (%s): moved aside and rebuilt", self.path, exc)
                self._conn.close()
                self._conn = None
                move_aside(self.path)
                self._conn = self._open()
                return work(self._conn)

    def _open(self) -> sqlite3.Connection:
        """A connection to a sound index of this schema version, made anew from the folders when needed."""
        if self.path.exists() and (conn := self._open_existing()) is not None:
            return conn
        conn = connect(self.path)
        try:
            self._fill(conn, read_folders(self.root))
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_existing(self) -> sqlite3.Connection | None:
        """The file as it is, if it passes ``quick_check`` and has this schema version; otherwise None, the
        file moved aside (damaged) or deleted (another version). Busy or unopenable files raise."""
        try:
            conn = connect(self.path)
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            log.warning("history index %s is damaged (%s): moved aside and rebuilt", self.path, exc)
            move_aside(self.path)
            return None
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                lines = [line for row in problems for line in str(row).splitlines() if not line.startswith("***")]
                raise sqlite3.DatabaseError(f"quick_check: {lines[0] if lines else problems}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return conn
            if version == 0:  # a new, empty file (maybe another process is filling it right now)
                self._fill(conn, read_folders(self.root), unless_made=True)
                return conn
        except sqlite3.DatabaseError as exc:
            conn.close()
            if not is_damage(exc):
                raise
            log.warning("history index %s is damaged (%s): moved aside and rebuilt", self.path, exc)
            move_aside(self.path)
            return None
        except BaseException:
            conn.close()
            raise
        conn.close()
        log.info("history index %s has schema %s, not %s: rebuilt", self.path, version, SCHEMA_VERSION)
        delete_file(self.path)
        return None

    def _fill(self, conn: sqlite3.Connection, records: list[FolderRecord], unless_made: bool = False) -> None:
        """Drop and make the schema, then insert ``records``, in one transaction: readers see the old index
        until it is done. ``unless_made``: leave a file another process has filled meanwhile."""
        with transaction(conn):
            if unless_made and conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return
            for statement in (*DROP, *SCHEMA):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            for record in records:
                self._insert(conn, record)

    @staticmethod
    def _delete_session(conn: sqlite3.Connection, session_id: str) -> None:
        for table, column in (("comments", "session_id"), ("alerts", "session_id"), ("sessions", "id")):
            conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (session_id,))

    @staticmethod
    def _insert(conn: sqlite3.Connection, record: FolderRecord) -> None:
        conn.execute(f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ({', '.join('?' * 15)})", record.row)
        conn.executemany(
            "INSERT INTO comments (session_id, camera_id, camera_name, comment_id, t, text) VALUES (?, ?, ?, ?, ?, ?)",
            record.comments,
        )
        conn.executemany(
            "INSERT INTO alerts (session_id, camera_id, camera_name, rule, state, t, confidence, reason, snapshot) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            record.alerts,
        )
