"""The History index's SQLite file: its schema, how it is opened, and how a damaged one is told and set aside.

Decisions:

* **FTS5 with external content** (``content='comments'``): the comment text is stored once, in
  ``comments``, and FTS5 reads it from there for ``snippet()``; a contentless table could not make
  snippets (it has no text to cut them from) and, on this SQLite, cannot delete rows without being
  handed the old text anyway. Triggers keep the full-text index in step with ``comments``, so a removed
  or re-indexed session never leaves words behind that would match a reused rowid.
* **WAL mode and a busy timeout** are for other processes on the same root (a CLI recording while the
  app runs): readers never wait for a writer, writers wait their turn.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1  # PRAGMA user_version; another value means the file is rebuilt
BUSY_S = 5.0  # how long a writer waits for another process's write to finish
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26

SCHEMA = (
    """CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        folder TEXT NOT NULL,
        started REAL NOT NULL,
        ended REAL,
        duration REAL NOT NULL,
        interrupted INTEGER NOT NULL,
        owner TEXT,
        source TEXT NOT NULL,
        cameras TEXT NOT NULL,
        comments INTEGER NOT NULL,
        alerts INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        backend TEXT NOT NULL,
        profile TEXT NOT NULL,
        preset TEXT NOT NULL)""",
    "CREATE INDEX sessions_started ON sessions (started DESC)",
    "CREATE INDEX sessions_owner ON sessions (owner, started DESC)",
    """CREATE TABLE comments (
        id INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL,
        camera_id TEXT NOT NULL,
        camera_name TEXT NOT NULL,
        comment_id INTEGER NOT NULL,
        t REAL NOT NULL,
        text TEXT NOT NULL)""",
    "CREATE INDEX comments_session ON comments (session_id, t)",
    """CREATE VIRTUAL TABLE comments_fts USING fts5(
        text, content='comments', content_rowid='id', tokenize='unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER comments_added AFTER INSERT ON comments BEGIN
        INSERT INTO comments_fts (rowid, text) VALUES (new.id, new.text);
    END""",
    """CREATE TRIGGER comments_removed AFTER DELETE ON comments BEGIN
        INSERT INTO comments_fts (comments_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END""",
    """CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL,
        camera_id TEXT NOT NULL,
        camera_name TEXT NOT NULL,
        rule TEXT NOT NULL,
        state TEXT NOT NULL,
        t REAL NOT NULL,
        confidence REAL,
        reason TEXT NOT NULL,
        snapshot TEXT)""",
    "CREATE INDEX alerts_session ON alerts (session_id, t)",
)
DROP = (
    "DROP TABLE IF EXISTS comments_fts",
    "DROP TABLE IF EXISTS comments",
    "DROP TABLE IF EXISTS alerts",
    "DROP TABLE IF EXISTS sessions",
)
SESSION_COLUMNS = (
    "id, folder, started, ended, duration, interrupted, owner, source, cameras, comments, alerts, errors, "
    "backend, profile, preset"
)


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are ``transaction``'s), WAL and a busy timeout on."""
    conn = sqlite3.connect(path, timeout=BUSY_S, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {round(BUSY_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # a cache: WAL's durability at commit is enough
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the write lock at once (no upgrade deadlock between processes)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether an error means the file itself is damaged (not busy, not a mistake in a statement)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return type(exc) is sqlite3.DatabaseError
    return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def _side_files(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def delete_file(path: Path) -> None:
    """The database and its WAL files (a WAL left behind would be replayed into the new file)."""
    for each in (path, *_side_files(path)):
        each.unlink(missing_ok=True)


def move_aside(path: Path) -> None:
    """A damaged database kept as ``history.sqlite3.damaged`` (with its WAL) for a look, the last one only."""
    aside = path.with_name(path.name + ".damaged")
    wal, shm = _side_files(path)
    try:
        path.replace(aside)
        if wal.exists():
            wal.replace(aside.with_name(aside.name + "-wal"))
    except OSError as exc:
        log.warning("history: %s could not be moved aside (%s); deleted", path, exc)
    delete_file(path)
    shm.unlink(missing_ok=True)
