"""Who sees which recorded sessions in the History tab (webui.history.HistoryAccess)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.recording.history import HistoryIndex
from tests.helpers.recorded_sessions import Said, write_session
from webui.history import HistoryAccess, search_table, session_table


@pytest.mark.parametrize(
    ("flags", "off"),
    [
        ({}, ""),
        ({"host": "0.0.0.0", "auth": "a:b"}, ""),
        ({"share": True, "auth": "a:b"}, ""),
        ({"host": "0.0.0.0"}, "shared app without a login"),
        ({"share": True}, "shared app without a login"),
        ({"record": False}, "--no-record"),
    ],
)
def test_the_tab_is_off_where_it_would_show_others_sessions(tmp_path: Path, flags: dict, off: str) -> None:
    access = HistoryAccess.from_settings(load_settings(record_dir=tmp_path, **flags))
    assert (off in access.off_because) if off else access.off_because == ""


def test_at_home_every_session_shows_and_shared_each_login_sees_its_own(tmp_path: Path) -> None:
    write_session(tmp_path, "ann-1", started=100.0, owner="ann", said=[Said(1.0, "A red car parks.")])
    write_session(tmp_path, "bob-1", started=200.0, owner="bob", said=[Said(1.0, "A red bike passes.")])
    write_session(tmp_path, "cli-1", started=300.0, said=[Said(1.0, "A red door.")])
    HistoryIndex(tmp_path).rebuild()
    home = HistoryAccess(tmp_path, shared=False)
    assert session_table(home, None)[1] == ["cli-1", "bob-1", "ann-1"]
    shared = HistoryAccess(tmp_path, shared=True)
    assert session_table(shared, "ann")[1] == ["ann-1"]
    assert search_table(shared, "bob", "red")[1] == ["bob-1"]
    assert search_table(shared, "carol", "red")[1] == []
