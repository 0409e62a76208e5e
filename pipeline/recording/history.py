"""The History's index: every recorded session, its kept comments and its alerts in one SQLite file.

The session folders are the truth; ``history.sqlite3`` in the recordings' root is a cache that lists and
searches them quickly, and it can always be made again from them (``rebuild``). So a missing file, a
damaged one (not a database, a failed ``quick_check``, corruption found later) or one with another
schema version is never an error: it is moved aside (damaged) or deleted (another version) and rebuilt
from the folders.

Decisions:

* **FTS5 with external content** (``content='comments'``): the comment text is stored once, in
  ``comments``, and FTS5 reads it from there for ``snippet()``; a contentless table could not make
  snippets (it has no text to cut them from) and, on this SQLite, cannot delete rows without being
  handed the old text anyway. Triggers keep the full-text index in step with ``comments``, so a removed
  or re-indexed session never leaves words behind that would match a reused rowid.
* **One connection, ``check_same_thread=False``, behind a lock**: the page's handlers run on a pool of
  changing threads and the recorder adds from its own. Per-thread connections would pile up, one per
  pool thread, with no moment to close them, and recovering from a damaged file would have to reach
  each of them. Every call here takes milliseconds, so serialising them in one process costs nothing
  a person notices. WAL mode and a busy timeout are for other processes on the same root (a CLI
  recording while the app runs): readers never wait for a writer, writers wait their turn.
* **Words are searched as typed, never as FTS syntax**: each word is quoted (``"`` doubled) and matched
  as a prefix (``"dog"*`` finds *dogs*), words side by side must all occur; ``AND``, ``NEAR(``, ``-``
  or ``*`` are just words, so nothing a user types can raise.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import math
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pipeline.recording.folder import EVENTS, META, SessionMeta, read_meta

log = logging.getLogger(__name__)

DB_NAME = "history.sqlite3"
SCHEMA_VERSION = 1  # PRAGMA user_version; another value means the file is rebuilt
BUSY_S = 5.0  # how long a writer waits for another process's write to finish
SNIPPET_TOKENS = 16
_MARK = ("\x02", "\x03")  # snippet markers that never occur in comment text, replaced per format
_EVENT_TYPES = (b'"commentary_end"', b'"alert"', b'"error"')  # the lines worth parsing
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26

_SCHEMA = (
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
_DROP = (
    "DROP TABLE IF EXISTS comments_fts",
    "DROP TABLE IF EXISTS comments",
    "DROP TABLE IF EXISTS alerts",
    "DROP TABLE IF EXISTS sessions",
)
_SESSION_COLUMNS = (
    "id, folder, started, ended, duration, interrupted, owner, source, cameras, comments, alerts, errors, "
    "backend, profile, preset"
)

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


@dataclass
class _Folder:
    """What one session folder puts in the index, read before the database is touched."""

    row: tuple[Any, ...]
    comments: list[tuple[Any, ...]] = field(default_factory=list)
    alerts: list[tuple[Any, ...]] = field(default_factory=list)


def match_query(words: str) -> str | None:
    """The user's words as an FTS5 query that cannot be a syntax error: each word quoted (``"`` doubled)
    and matched as a prefix, all of them required; None when no word has a letter or digit."""
    terms = ['"' + word.replace('"', '""') + '"*' for word in words.split() if any(ch.isalnum() for ch in word)]
    return " ".join(terms) or None


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether an error means the file itself is damaged (not busy, not a mistake in a statement)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return type(exc) is sqlite3.DatabaseError
    return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


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


def _read_folder(folder: Path) -> _Folder:
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
    return _Folder(row, comments, alerts)


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


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the write lock at once (no upgrade deadlock between processes)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _side_files(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def _delete(path: Path) -> None:
    """The database and its WAL files (a WAL left behind would be replayed into the new file)."""
    for each in (path, *_side_files(path)):
        each.unlink(missing_ok=True)


def _move_aside(path: Path) -> None:
    """A damaged database kept as ``history.sqlite3.damaged`` (with its WAL) for a look, the last one only."""
    aside = path.with_name(path.name + ".damaged")
    wal, shm = _side_files(path)
    try:
        path.replace(aside)
        if wal.exists():
            wal.replace(aside.with_name(aside.name + "-wal"))
    except OSError as exc:
        log.warning("history: %s could not be moved aside (%s); deleted", path, exc)
    _delete(path)
    shm.unlink(missing_ok=True)


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
            record = _read_folder(folder)
        except TypeError as exc:  # session.json without an id or start
            raise ValueError(f"{folder / META}: {exc}") from None

        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                self._delete_session(conn, record.row[0])
                self._insert(conn, record)

        self._use(work)

    def remove(self, session_id: str) -> None:
        """Forget one session (its folder was deleted); unknown ids are ignored."""

        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                self._delete_session(conn, session_id)

        self._use(work)

    def rebuild(self) -> int:
        """Drop the index and make it again from every folder under ``root`` with a ``session.json`` (others
        are ignored, and so is one whose ``session.json`` cannot be read); returns how many it holds."""
        records = self._read_all()
        self._use(lambda conn: self._fill(conn, records))
        return len(records)

    # --- reading ---
    def sessions(self, owner: str | None = None, *, any_owner: bool = False) -> list[SessionRow]:
        """Sessions newest first: ``owner``'s only (None: those recorded without a login), or everyone's
        with ``any_owner`` — a shared app shows a visitor only what they recorded."""
        where, args = _owner_clause(owner, any_owner)
        sql = f"SELECT {_SESSION_COLUMNS} FROM sessions s WHERE {where} ORDER BY s.started DESC, s.id DESC"
        return self._use(lambda conn: [_session_row(row) for row in conn.execute(sql, args)])

    def session(self, session_id: str) -> SessionRow | None:
        """One session's row, or None when the index does not know it."""
        sql = f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?"
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
                if not _is_damage(exc):
                    raise
                log.warning("history index %s is damaged (%s): moved aside and rebuilt", self.path, exc)
                self._conn.close()
                self._conn = None
                _move_aside(self.path)
                self._conn = self._open()
                return work(self._conn)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_S, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {round(BUSY_S * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # a cache: WAL's durability at commit is enough
        except BaseException:
            conn.close()
            raise
        return conn

    def _open(self) -> sqlite3.Connection:
        """A connection to a sound index of this schema version, made anew from the folders when needed."""
        if self.path.exists() and (conn := self._open_existing()) is not None:
            return conn
        conn = self._connect()
        try:
            self._fill(conn, self._read_all())
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_existing(self) -> sqlite3.Connection | None:
        """The file as it is, if it passes ``quick_check`` and has this schema version; otherwise None, the
        file moved aside (damaged) or deleted (another version). Busy or unopenable files raise."""
        try:
            conn = self._connect()
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                raise
            log.warning("history index %s is damaged (%s): moved aside and rebuilt", self.path, exc)
            _move_aside(self.path)
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
                self._fill(conn, self._read_all(), unless_made=True)
                return conn
        except sqlite3.DatabaseError as exc:
            conn.close()
            if not _is_damage(exc):
                raise
            log.warning("history index %s is damaged (%s): moved aside and rebuilt", self.path, exc)
            _move_aside(self.path)
            return None
        except BaseException:
            conn.close()
            raise
        conn.close()
        log.info("history index %s has schema %s, not %s: rebuilt", self.path, version, SCHEMA_VERSION)
        _delete(self.path)
        return None

    def _read_all(self) -> list[_Folder]:
        records: list[_Folder] = []
        if not self.root.is_dir():
            return records
        for folder in sorted(self.root.iterdir()):
            if not (folder.is_dir() and (folder / META).is_file()):
                continue
            try:
                records.append(_read_folder(folder))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("history: %s left out: %s", folder, exc)
        return records

    def _fill(self, conn: sqlite3.Connection, records: list[_Folder], unless_made: bool = False) -> None:
        """Drop and make the schema, then insert ``records``, in one transaction: readers see the old index
        until it is done. ``unless_made``: leave a file another process has filled meanwhile."""
        with _transaction(conn):
            if unless_made and conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return
            for statement in (*_DROP, *_SCHEMA):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            for record in records:
                self._insert(conn, record)

    @staticmethod
    def _delete_session(conn: sqlite3.Connection, session_id: str) -> None:
        for table, column in (("comments", "session_id"), ("alerts", "session_id"), ("sessions", "id")):
            conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (session_id,))

    @staticmethod
    def _insert(conn: sqlite3.Connection, record: _Folder) -> None:
        conn.execute(f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES ({', '.join('?' * 15)})", record.row)
        conn.executemany(
            "INSERT INTO comments (session_id, camera_id, camera_name, comment_id, t, text) VALUES (?, ?, ?, ?, ?, ?)",
            record.comments,
        )
        conn.executemany(
            "INSERT INTO alerts (session_id, camera_id, camera_name, rule, state, t, confidence, reason, snapshot) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            record.alerts,
        )
