"""The History's index on real session folders and a real SQLite file: listing, owners, full-text search
that no typed text can break, transcripts and alerts, and an index that is made again from the folders
whenever it is missing, damaged or from another version."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.recording.folder import EVENTS
from pipeline.recording.history import DB_NAME, SCHEMA_VERSION, HistoryIndex, match_query
from tests.helpers.recorded_sessions import Raised, Said, write_session

NOW = 1_717_000_000.0
DAY = 86_400.0
OLD, SHARED, NEW = "2024-05-26_09-00-00_front-door", "2024-05-27_09-00-00_front-door", "2024-05-28_09-00-00_street"


def make_library(root: Path) -> dict[str, Path]:
    """Three sessions: the machine user's oldest and newest, a visitor's (alice) in between with two cameras."""
    return {
        OLD: write_session(
            root,
            OLD,
            started=NOW - 3 * DAY,
            said=[
                Said(4.0, "A grey cat sleeps on the porch."),
                Said(9.0, "The cat jumps onto the fence.", suppressed="repeat"),
                Said(12.0, "   "),
            ],
            alerts=[
                Raised(6.0, "person", reason="someone at the door", snapshot="alert-6.jpg"),
                Raised(8.0, "person", state="cleared", confidence=0.2),
            ],
            errors=1,
        ),
        SHARED: write_session(
            root,
            SHARED,
            started=NOW - 2 * DAY,
            owner="alice",
            cameras=("front-door", "back-yard"),
            said=[
                Said(2.0, "A delivery van stops outside."),
                Said(5.0, "A cat crosses the back yard.", camera="back-yard"),
                Said(7.5, "The van drives away."),
            ],
        ),
        NEW: write_session(
            root,
            NEW,
            started=NOW - 1 * DAY,
            cameras=("street",),
            said=[
                Said(1.0, "Rain on the lens; the street is empty.", camera="street"),
                Said(3.0, "A cat and a dog meet at the gate.", camera="street"),
                Said(6.0, "Someone wrote <script> on the wall & left.", camera="street"),
            ],
        ),
    }


@pytest.fixture
def library(tmp_path: Path) -> Path:
    root = tmp_path / "sessions"
    make_library(root)
    return root


def ids(rows: list) -> list[str]:
    return [row.id for row in rows]


def hits(index: HistoryIndex, words: str, **owner) -> list[tuple[str, float]]:
    return [(hit.session_id, hit.t) for hit in index.search(words, **owner)]


def test_sessions_are_listed_newest_first_with_what_their_folders_say(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    root.mkdir()
    index = HistoryIndex(root)
    assert index.sessions(any_owner=True) == []
    folders = make_library(root)
    for name in (SHARED, NEW, OLD):  # not in time order
        index.add(folders[name])
    assert ids(index.sessions(any_owner=True)) == [NEW, SHARED, OLD]
    shared = index.session(SHARED)
    assert shared is not None and shared.owner == "alice" and shared.folder == folders[SHARED]
    assert shared.cameras == ("front-door camera", "back-yard camera")
    assert shared.source == "rtsp://***@front-door.local/stream"  # the first camera's, masked as recorded
    assert (shared.backend, shared.profile, shared.preset) == ("opencv", "security", "fast")
    assert (shared.comments, shared.alerts, shared.errors, shared.duration) == (3, 0, 0, 7.5)
    assert shared.started == NOW - 2 * DAY and not shared.interrupted and shared.ended is not None
    old = index.session(OLD)
    assert old is not None and (old.comments, old.alerts, old.errors) == (1, 1, 1)
    assert index.session("no-such-session") is None


def test_a_visitor_sees_only_their_own_sessions_and_comments(library: Path) -> None:
    index = HistoryIndex(library)
    assert ids(index.sessions()) == [NEW, OLD]  # no login: the machine user's own
    assert ids(index.sessions("alice")) == [SHARED]
    assert index.sessions("bob") == []
    assert ids(index.sessions("bob", any_owner=True)) == [NEW, SHARED, OLD]
    assert hits(index, "cat") == [(NEW, 3.0), (OLD, 4.0)]
    assert hits(index, "cat", owner="alice") == [(SHARED, 5.0)]
    assert hits(index, "cat", owner="bob") == []
    assert hits(index, "cat", any_owner=True) == [(NEW, 3.0), (SHARED, 5.0), (OLD, 4.0)]


def test_search_finds_kept_comments_newest_session_first_then_by_time(library: Path) -> None:
    index = HistoryIndex(library)
    everyone = {"any_owner": True}
    assert hits(index, "van", **everyone) == [(SHARED, 2.0), (SHARED, 7.5)]
    assert hits(index, "jumps", **everyone) == []  # only in a suppressed comment
    assert hits(index, "deliver", **everyone) == [(SHARED, 2.0)]  # each word is a prefix
    assert hits(index, "CAT gate", **everyone) == [(NEW, 3.0)]  # every word, any case
    assert hits(index, "cat zebra", **everyone) == []
    (crossing,) = [hit for hit in index.search("crosses", any_owner=True)]
    assert (crossing.camera_id, crossing.camera_name) == ("back-yard", "back-yard camera")
    assert crossing.text == "A cat crosses the back yard." and crossing.session_started == NOW - 2 * DAY
    assert "[crosses]" in crossing.snippet and "<mark>crosses</mark>" in crossing.snippet_html


def test_snippets_for_a_page_are_escaped(library: Path) -> None:
    (hit,) = HistoryIndex(library).search("script")
    assert hit.snippet == "Someone wrote <[script]> on the wall & left."
    assert hit.snippet_html == "Someone wrote &lt;<mark>script</mark>&gt; on the wall &amp; left."


HOSTILE = [
    '"',
    '""',
    "*",
    "AND",
    "OR",
    "NOT",
    "NEAR(",
    "NEAR(cat dog, 2)",
    "-",
    "-cat",
    "cat -dog",
    'cat"',
    'c"a"t',
    "cat*",
    "^cat",
    "text:cat",
    "{text}: cat",
    "cat + dog",
    "(",
    ")",
    "'",
    "cat AND",
    "AND OR NOT",
    "",
    "   ",
    "\x00",
    "💥",
    "%_",
]


@pytest.mark.parametrize("words", HOSTILE)
def test_punctuation_and_search_syntax_in_what_people_type_never_raise(library: Path, words: str) -> None:
    found = HistoryIndex(library).search(words, any_owner=True)
    assert isinstance(found, list)


def test_search_syntax_is_read_as_plain_words(library: Path) -> None:
    index = HistoryIndex(library)
    everyone = {"any_owner": True}
    cats = [(NEW, 3.0), (SHARED, 5.0), (OLD, 4.0)]
    for words in ('"cat"', "cat*", "-cat", 'cat"', "(cat)"):
        assert hits(index, words, **everyone) == cats, words
    assert hits(index, "AND", **everyone) == [(NEW, 3.0)]  # the word "and", not an operator
    assert hits(index, "cat -dog", **everyone) == [(NEW, 3.0)]  # "-dog" is the word dog, not "without dog"
    assert match_query('say "hi" NEAR(') == '"say"* """hi"""* "NEAR("*'
    assert match_query(" - * ") is None


def test_the_transcript_and_the_alerts_of_a_session(library: Path) -> None:
    index = HistoryIndex(library)
    transcript = [(c.t, c.camera_id, c.camera_name, c.text) for c in index.comments(SHARED)]
    assert transcript == [
        (2.0, "front-door", "front-door camera", "A delivery van stops outside."),
        (5.0, "back-yard", "back-yard camera", "A cat crosses the back yard."),
        (7.5, "front-door", "front-door camera", "The van drives away."),
    ]
    assert [c.text for c in index.comments(OLD)] == ["A grey cat sleeps on the porch."]  # not suppressed or blank
    started, cleared = index.alerts(OLD)
    assert (started.rule, started.state, started.t, started.camera_id) == ("person", "started", 6.0, "front-door")
    assert (started.confidence, started.reason, started.snapshot) == (0.9, "someone at the door", "alert-6.jpg")
    assert (cleared.state, cleared.t, cleared.confidence, cleared.snapshot) == ("cleared", 8.0, 0.2, None)
    assert index.comments("no-such-session") == [] and index.alerts(SHARED) == []


def append_events(folder: Path, *lines: bytes) -> None:
    with open(folder / EVENTS, "ab") as file:
        for line in lines:
            file.write(line)


def comment_line(t: float, comment_id: int, text: str, camera: str = "front-door") -> bytes:
    event = {
        "type": "commentary_end",
        "t": t,
        "wall": NOW + t,
        "camera": {"id": camera, "name": f"{camera} camera"},
        "comment_id": comment_id,
        "text": text,
        "suppressed": "",
    }
    return (json.dumps(event, ensure_ascii=False) + "\n").encode()


def test_adding_a_session_again_replaces_what_the_index_had(library: Path) -> None:
    index = HistoryIndex(library)
    append_events(library / OLD, comment_line(20.0, 7, "An owl lands on the porch."))
    index.add(library / OLD)
    index.add(library / OLD)
    assert [c.t for c in index.comments(OLD)] == [4.0, 20.0]
    assert hits(index, "porch") == [(OLD, 4.0), (OLD, 20.0)]  # no duplicates
    assert index.session(OLD).comments == 2 and index.session(OLD).duration == 20.0  # events ahead of session.json
    assert ids(index.sessions(any_owner=True)) == [NEW, SHARED, OLD]


def test_a_removed_session_leaves_no_words_behind(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    index = HistoryIndex(root)
    first = write_session(root, "first", started=NOW, said=[Said(1.0, "A zebra walks by.")])
    index.add(first)
    assert hits(index, "zebra") == [("first", 1.0)]
    index.remove("first")
    index.remove("never-indexed")
    shutil.rmtree(first)
    index.add(write_session(root, "second", started=NOW + 1, said=[Said(1.0, "A giraffe eats leaves.")]))
    assert hits(index, "zebra") == []  # the comment's row id is used again: its old words must be gone
    assert hits(index, "giraffe") == [("second", 1.0)]
    assert ids(index.sessions()) == ["second"] and index.comments("first") == []


def test_unreadable_event_lines_are_skipped_and_a_cut_last_line_too(library: Path) -> None:
    cut = comment_line(30.0, 9, "A fox runs across the lawn é and away.")
    cut = cut[: cut.index("é".encode()) + 1]  # cut in the middle of a character, as a crash leaves it
    append_events(
        library / OLD,
        b"not json at all\n",
        b'["commentary_end", 1]\n',
        b'{"type": "commentary_end", "t": "soon", "comment_id": 5, "text": "A bat flies.", "suppressed": ""}\n',
        b'{"type": "commentary_end", "t": 1.0, "comment_id": "x", "text": "A bat flies.", "suppressed": ""}\n',
        b'{"type": "alert", "t": null, "rule": "bat"}\n',
        b'{"type": "commentary_end", "t": NaN, "comment_id": 6, "text": "A bat flies.", "suppressed": ""}\n',
        b'{"type": "commentary_end", "t": 1.0, "comment_id": 1e999, "text": "A bat flies.", "suppressed": ""}\n',
        b'{"type": "commentary_end", "t": 1.0, "comment_id": 99999999999999999999, "text": "A bat"}\n',
        b'{"type": "commentary_end", "t": 2.0, "comment_id": 6, "text": "A moth \\ud800 flutters."}\n',
        b'{"type": "alert", "t": 1e999, "rule": "bat"}\n',
        comment_line(25.0, 8, "An owl hoots."),
        cut,
    )
    index = HistoryIndex(library)
    assert [c.text for c in index.comments(OLD)] == [
        "A moth ? flutters.",
        "A grey cat sleeps on the porch.",
        "An owl hoots.",
    ]
    assert hits(index, "fox") == [] and hits(index, "bat") == []
    assert [a.t for a in index.alerts(OLD)] == [6.0, 8.0]


def test_a_folder_without_its_events_file_is_listed_from_session_json(library: Path) -> None:
    (library / NEW / EVENTS).unlink()
    index = HistoryIndex(library)
    assert index.session(NEW).comments == 3  # as session.json counted them
    assert index.comments(NEW) == []
    with pytest.raises(OSError):
        index.add(library / "no-such-folder")


@contextlib.contextmanager
def connected(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection to the index file, as another process would have: committed and closed after."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def rows_in(path: Path) -> int:
    with connected(path) as conn:
        return conn.execute("SELECT count(*) FROM sessions").fetchone()[0]


def test_a_missing_index_file_is_made_from_the_folders(library: Path) -> None:
    path = library / DB_NAME
    assert not path.exists()
    index = HistoryIndex(library)
    assert path.exists() and rows_in(path) == 3
    with connected(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    index.close()
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
        (library / name).unlink(missing_ok=True)
    index = HistoryIndex(library)
    assert ids(index.sessions(any_owner=True)) == [NEW, SHARED, OLD]
    assert hits(index, "van", owner="alice") == [(SHARED, 2.0), (SHARED, 7.5)]


def test_a_file_of_garbage_is_moved_aside_and_the_index_made_again(library: Path) -> None:
    HistoryIndex(library).close()
    garbage = b"this is not a database " * 500
    (library / DB_NAME).write_bytes(garbage)
    index = HistoryIndex(library)
    assert ids(index.sessions(any_owner=True)) == [NEW, SHARED, OLD]
    assert hits(index, "gate") == [(NEW, 3.0)]
    assert (library / f"{DB_NAME}.damaged").read_bytes() == garbage
    assert rows_in(library / DB_NAME) == 3


def test_damaged_pages_fail_the_quick_check_and_the_index_is_made_again(library: Path) -> None:
    HistoryIndex(library).close()
    path = library / DB_NAME
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) > 3 * page  # the header page stays readable; the tables behind it are scrambled
    for at in range(2 * page, len(data), 7):
        data[at] = (data[at] * 31 + 7) % 256
    path.write_bytes(bytes(data))
    with connected(path) as conn:
        assert conn.execute("PRAGMA quick_check").fetchall() != [("ok",)]
    index = HistoryIndex(library)
    assert (library / f"{DB_NAME}.damaged").exists()  # found on opening, before any query met the damage
    assert ids(index.sessions(any_owner=True)) == [NEW, SHARED, OLD]


def test_damage_found_while_in_use_is_repaired_and_the_call_answered(library: Path) -> None:
    index = HistoryIndex(library)
    assert len(index.search("cat", any_owner=True)) == 3
    with connected(library / DB_NAME) as other:  # the full-text blocks scrambled: quick_check cannot see it
        for block_id, size in other.execute("SELECT id, length(block) FROM comments_fts_data WHERE id > 10").fetchall():
            other.execute("UPDATE comments_fts_data SET block = ? WHERE id = ?", (b"\xff" * size, block_id))
    with connected(library / DB_NAME) as other, pytest.raises(sqlite3.DatabaseError, match="malformed"):
        other.execute("SELECT rowid FROM comments_fts WHERE comments_fts MATCH 'cat'").fetchall()
    assert hits(index, "cat", any_owner=True) == [(NEW, 3.0), (SHARED, 5.0), (OLD, 4.0)]
    assert (library / f"{DB_NAME}.damaged").exists()


def test_an_index_of_another_schema_version_is_made_again(library: Path) -> None:
    HistoryIndex(library).close()
    with connected(library / DB_NAME) as conn:
        conn.execute("DELETE FROM sessions")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    index = HistoryIndex(library)
    assert ids(index.sessions(any_owner=True)) == [NEW, SHARED, OLD]
    assert not (library / f"{DB_NAME}.damaged").exists()  # not damaged, just another version: replaced


def test_rebuild_reads_the_folders_again_and_ignores_what_is_not_a_session(library: Path) -> None:
    index = HistoryIndex(library)
    shutil.rmtree(library / SHARED)
    (library / "notes").mkdir()
    (library / "notes" / EVENTS).write_bytes(comment_line(1.0, 1, "A cat in the notes."))
    (library / "broken").mkdir()
    (library / "broken" / "session.json").write_text("{not json", encoding="utf-8")
    (library / "stray.txt").write_text("not a folder", encoding="utf-8")
    assert ids(index.sessions(any_owner=True)) == [NEW, SHARED, OLD]  # the index lags until rebuilt
    assert index.rebuild() == 2
    assert ids(index.sessions(any_owner=True)) == [NEW, OLD]
    assert hits(index, "van", any_owner=True) == []
    assert hits(index, "cat", any_owner=True) == [(NEW, 3.0), (OLD, 4.0)]


def test_one_index_serves_many_threads(library: Path) -> None:
    index = HistoryIndex(library)
    failures: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(40):
                assert len(index.search("cat", any_owner=True)) == 3
                assert len(index.sessions(any_owner=True)) == 3
        except BaseException as exc:
            failures.append(exc)

    readers = [threading.Thread(target=read) for _ in range(6)]
    for thread in readers:
        thread.start()
    for _ in range(20):
        index.add(library / SHARED)
    for thread in readers:
        thread.join()
    assert failures == []


def test_catch_up_indexes_the_folders_a_recorder_could_not_add(tmp_path: Path) -> None:
    write_session(tmp_path, "first", started=100.0, said=[Said(1.0, "A heron lands.")])
    with HistoryIndex(tmp_path) as index:
        index.rebuild()
        write_session(tmp_path, "second", started=200.0, said=[Said(2.0, "A heron leaves.")])  # never added
        (tmp_path / "not-a-session").mkdir()
        assert [row.id for row in index.sessions(any_owner=True)] == ["first"]
        assert index.catch_up() == 1
        assert [row.id for row in index.sessions(any_owner=True)] == ["second", "first"]
        assert [hit.session_id for hit in index.search("leaves", any_owner=True)] == ["second"]
        assert index.catch_up() == 0
