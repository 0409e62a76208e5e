"""Shared fixtures: generated test videos and a loopback static-file HTTP server."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # ``pipeline`` and ``tests.helpers``

from tests.helpers.media import Segment, write_video  # noqa: E402

# Static, then motion, then cuts between scenes: the default "known content" clip (14 s).
STORY = [
    Segment(4, 0),
    Segment(4, 0, moving=True),
    Segment(2, 1),
    Segment(4, 2, moving=True),
]


@pytest.fixture(scope="session", autouse=True)
def user_data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The user's data folder (where sessions are recorded by default) is a temporary one for the whole run,
    for this process and every app it starts: tests never write into the real home."""
    home = tmp_path_factory.mktemp("xdg-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_DATA_HOME", str(home))
        yield home


@pytest.fixture(scope="session", autouse=True)
def user_config_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The user's config folder (where the settings file is looked for, and Save as default writes) is a
    temporary one for the whole run, for this process and every app it starts: a developer's own
    ``~/.config/onlooker/onlooker.yaml`` never changes what a test sees, and no test writes it."""
    home = tmp_path_factory.mktemp("xdg-config")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def story_video(media_dir: Path) -> Path:
    return write_video(media_dir / "story.mp4", STORY)


@pytest.fixture(scope="session")
def short_video(media_dir: Path) -> Path:
    return write_video(media_dir / "short.mp4", [Segment(1.0, 0), Segment(1.0, 1, moving=True)])


@pytest.fixture(scope="session")
def hls_vod(tmp_path_factory: pytest.TempPathFactory, short_video: Path) -> Path:
    """The 2 s clip as VOD HLS (copy this folder before changing it): index.m3u8 and its 1 s segments
    index0.ts, index1.ts."""
    folder = tmp_path_factory.mktemp("hls")
    cmd = ["ffmpeg", "-loglevel", "error", "-i", str(short_video), "-c", "copy", "-hls_time", "1",
           "-hls_playlist_type", "vod", str(folder / "index.m3u8")]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=60)
    return folder


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random faster-whisper model built offline (``tests/helpers/tiny_whisper.py``)."""
    if not all(importlib.util.find_spec(name) for name in ("faster_whisper", "ctranslate2")):
        pytest.skip("faster-whisper is not installed: pip install -r requirements-dev.txt")
    from tests.helpers.tiny_whisper import build_tiny_whisper

    return build_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper") / "ct2")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields (base URL, folder)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def pytest_report_header(config: pytest.Config) -> str:
    """Which copy of MiniCPM-o 4.5's code the conformance tests run (tests/integration/test_minicpm_real.py)."""
    from tests.helpers.minicpm_o45 import find_code

    try:
        return f"MiniCPM-o 4.5 code: {find_code()}"
    except FileNotFoundError as exc:
        return f"MiniCPM-o 4.5 code: none ({exc})"
