"""Sources against a real HTTP server on loopback (``http_dir``): progressive MP4, HLS, 404 and web pages.

Files, closed ports and pushed frames: ``tests/unit/test_sources.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from pipeline.sources.resolve import UrlSource, open_source
from tests.helpers.collector import Collector


def test_progressive_http_mp4_plays_like_a_file(http_dir, short_video):
    base, root = http_dir
    shutil.copy(short_video, root / "clip.mp4")
    source = open_source(f"{base}/clip.mp4")
    assert isinstance(source, UrlSource)
    got = Collector().run(source)
    assert len(got.frames) >= 20 and got.states[-1][0] == "ended"
    assert source.kind == "stream" and not source.live  # finite: paced like a file


def test_hls_playlist_over_http(http_dir, short_video):
    base, root = http_dir
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(short_video), "-c", "copy", "-hls_time", "1",
         "-hls_playlist_type", "vod", str(root / "index.m3u8")],
        check=True,
        timeout=60,
    )  # fmt: skip
    got = Collector().run(open_source(f"{base}/index.m3u8"))
    assert len(got.frames) >= 28 and got.states[-1][0] == "ended"


def test_http_404_and_html_page(http_dir, monkeypatch: pytest.MonkeyPatch):
    base, root = http_dir
    (root / "page.html").write_text("<html><body><h1>My camera</h1></body></html>")
    got = Collector().run(open_source(f"{base}/nothing.mp4"))
    assert got.states[-1][0] == "failed" and "404" in got.states[-1][1]
    got = Collector().run(open_source(f"{base}/page.html"))
    assert got.states[-1][0] == "failed" and "web page" in got.states[-1][1]
    monkeypatch.setitem(sys.modules, "yt_dlp", None)  # as if yt-dlp were not installed
    got = Collector().run(open_source(f"{base}/page.html"))
    assert "install yt-dlp" in got.states[-1][1]
