"""Retention on real session folders: the oldest go first, by age and then by size; sessions still being
recorded stay; what cannot be removed is reported; the History's index forgets what went."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pipeline.recording.folder import EVENTS, META
from pipeline.recording.history import HistoryIndex
from pipeline.recording.retention import GB, LIVE_S, folder_size, prune
from tests.helpers.recorded_sessions import Said, write_session

DAY = 86_400.0
PADDING = 20_000


@pytest.fixture
def now() -> float:
    return time.time()


def sessions_aged(root: Path, now: float, *days: float, **kwargs) -> list[str]:
    """One session per age in days (a word per session to search for), each about PADDING bytes."""
    names = []
    for age in days:
        name = f"aged-{age:g}-days"
        said = [Said(1.0, f"Seen {age:g} days ago: word{age:g}.")]
        write_session(root, name, started=now - age * DAY, said=said, padding=PADDING, **kwargs)
        names.append(name)
    return names


def left(root: Path) -> set[str]:
    return {path.name for path in root.iterdir() if path.is_dir()}


def test_sessions_older_than_the_days_to_keep_go_oldest_first(tmp_path: Path, now: float) -> None:
    recent, oldest, old = sessions_aged(tmp_path, now, 1, 10, 5)
    sizes = {name: folder_size(tmp_path / name) for name in (oldest, old)}
    removed = prune(tmp_path, keep_days=3, max_bytes=None, now=now)
    assert [(r.id, r.why, r.removed) for r in removed] == [
        (oldest, "older than 3 days", True),
        (old, "older than 3 days", True),
    ]
    assert [r.started for r in removed] == [now - 10 * DAY, now - 5 * DAY]
    assert [r.size for r in removed] == [sizes[oldest], sizes[old]] and sizes[old] > PADDING
    assert left(tmp_path) == {recent}
    assert prune(tmp_path, keep_days=3, max_bytes=None, now=now) == []
    assert prune(tmp_path, keep_days=0.5, max_bytes=None, now=now)[0].why == "older than 0.5 days"


def test_over_the_size_limit_the_oldest_go_until_all_fit(tmp_path: Path, now: float) -> None:
    names = sessions_aged(tmp_path, now, 4, 3, 2, 1)  # oldest first
    sizes = [folder_size(tmp_path / name) for name in names]
    total = sum(sizes)
    removed = prune(tmp_path, keep_days=None, max_bytes=total - 1, now=now)
    assert [r.id for r in removed] == names[:1]
    limit = sizes[3] + sizes[2] // 2  # the newest fits, the next does not
    removed = prune(tmp_path, keep_days=None, max_bytes=limit, now=now)
    assert [(r.id, r.size) for r in removed] == [(names[1], sizes[1]), (names[2], sizes[2])]
    assert all(r.why == f"over the {limit / GB:g} GB limit" for r in removed)
    assert left(tmp_path) == {names[3]}
    assert prune(tmp_path, keep_days=None, max_bytes=None, now=now) == []


def test_age_then_size_and_without_limits_nothing(tmp_path: Path, now: float) -> None:
    names = sessions_aged(tmp_path, now, 30, 20, 2, 1)
    assert prune(tmp_path, keep_days=None, max_bytes=None, now=now) == []
    assert left(tmp_path) == set(names)
    newest = folder_size(tmp_path / names[3])
    removed = prune(tmp_path, keep_days=7, max_bytes=newest, now=now)
    assert [(r.id, r.why.split()[0]) for r in removed] == [
        (names[0], "older"),
        (names[1], "older"),
        (names[2], "over"),
    ]


def test_sessions_still_recording_are_never_removed(tmp_path: Path, now: float) -> None:
    kept, crashed, live, old = "kept", "crashed", "live-elsewhere", "old"
    write_session(tmp_path, kept, started=now - 40 * DAY, padding=PADDING)
    write_session(tmp_path, crashed, started=now - 30 * DAY, interrupted=True, padding=PADDING)
    write_session(tmp_path, live, started=now - 20 * DAY, interrupted=True, padding=PADDING)
    write_session(tmp_path, old, started=now - 10 * DAY, padding=PADDING)
    for name in (META, EVENTS):  # the crashed one's files have not changed for a day; the live one's just did
        os.utime(tmp_path / crashed / name, (now - DAY, now - DAY))
        os.utime(tmp_path / live / name, (now - LIVE_S / 4, now - LIVE_S / 4))
    removed = prune(tmp_path, keep_days=1, max_bytes=0, now=now, keep={kept})
    assert [r.id for r in removed] == [crashed, old]
    assert left(tmp_path) == {kept, live}
    assert prune(tmp_path, keep_days=None, max_bytes=0, now=now, keep=frozenset({kept})) == []  # over, and yet
    assert [r.id for r in prune(tmp_path, None, 0, now=now + LIVE_S, keep=set())] == [kept, live]


def test_only_session_folders_are_counted_or_removed(tmp_path: Path, now: float) -> None:
    (name,) = sessions_aged(tmp_path, now, 400)
    stray = tmp_path / "my-videos"
    stray.mkdir()
    (stray / "holiday.mp4").write_bytes(b"\0" * 10 * PADDING)
    os.utime(stray, (now - 500 * DAY, now - 500 * DAY))
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    assert prune(tmp_path, keep_days=None, max_bytes=2 * PADDING, now=now) == []  # the stray folder is not counted
    removed = prune(tmp_path, keep_days=1, max_bytes=0, now=now)
    assert [r.id for r in removed] == [name]
    assert left(tmp_path) == {"my-videos"} and (stray / "holiday.mp4").exists()
    assert prune(tmp_path / "no-such-root", keep_days=0, max_bytes=0, now=now) == []


def test_the_history_index_forgets_what_went(tmp_path: Path, now: float) -> None:
    names = sessions_aged(tmp_path, now, 9, 8, 1)
    index = HistoryIndex(tmp_path)
    assert len(index.sessions()) == 3 and len(index.search("word9")) == 1
    removed = prune(tmp_path, keep_days=5, max_bytes=None, now=now, index=index)
    assert [r.id for r in removed] == names[:2]
    assert [row.id for row in index.sessions()] == names[2:]
    assert index.search("word9") == [] and index.search("word8") == []
    assert len(index.search("word1")) == 1
    assert (tmp_path / "history.sqlite3").is_file()  # the index beside the sessions is not one of them


def test_a_folder_that_cannot_be_removed_is_reported_and_the_rest_go_on(tmp_path: Path, now: float) -> None:
    root = tmp_path / "sessions"
    elsewhere = tmp_path / "elsewhere"
    write_session(elsewhere, "linked", started=now - 9 * DAY, padding=PADDING)
    root.mkdir()
    (root / "linked").symlink_to(elsewhere / "linked", target_is_directory=True)  # rmtree refuses links
    (name,) = sessions_aged(root, now, 8)
    index = HistoryIndex(root)
    removed = prune(root, keep_days=5, max_bytes=None, now=now, index=index)
    assert [(r.id, r.removed) for r in removed] == [("linked", False), (name, True)]
    assert "symbolic link" in removed[0].error and removed[0].size > PADDING
    assert (root / "linked").is_symlink() and (elsewhere / "linked" / META).exists()
    assert [row.id for row in index.sessions()] == ["linked"]  # still there, still listed


def test_folder_size_counts_every_file_once_and_follows_no_link(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").mkdir()
    (tmp_path / "one.bin").write_bytes(b"x" * 100)
    (tmp_path / "a" / "b" / "two.bin").write_bytes(b"y" * 250)
    big = tmp_path.parent / f"{tmp_path.name}-big.bin"
    big.write_bytes(b"z" * 100_000)
    (tmp_path / "a" / "link.bin").symlink_to(big)
    (tmp_path / "a" / "dir-link").symlink_to(tmp_path.parent, target_is_directory=True)
    links = len(str(big)) + len(str(tmp_path.parent))  # a link's own size is its target's path
    assert folder_size(tmp_path) == 350 + links
    assert folder_size(tmp_path / "missing") == 0
