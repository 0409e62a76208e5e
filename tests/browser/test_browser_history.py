"""The History tab in a real Chromium: sessions recorded by the real CLI and the real app, listed, searched,
opened, played with their subtitles by the browser's own player, downloaded and deleted; on a shared app
with two logins, each sees only their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pysubs2
import pytest

from pipeline.recording.folder import read_meta
from tests.helpers.browser import AppServer, browser_test_marks, launch_browser, textbox

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

from tests.helpers.app_page import VIEWPORT, doc_screenshot, expect_commentary, upload, wait_health  # noqa: E402

pytestmark = browser_test_marks()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_api.sync_playwright() as pw:
        chromium = launch_browser(pw)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, story_video: Path) -> Path:
    """A recordings folder holding one session the CLI recorded, with its narration."""
    root = tmp_path_factory.mktemp("sessions")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONLOOKER_")}
    args = ["--headless", "--backend", "opencv", "--source", str(story_video), "--record-dir", str(root)]
    work = tmp_path_factory.mktemp("cli")
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), *args, "--audio-out", "n.wav"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=work,
    )
    assert result.returncode == 0, result.stderr
    return root


def open_history(context: BrowserContext, url: str) -> Page:
    page = context.new_page()
    page.goto(url)
    expect(page.locator("#start")).to_be_visible(timeout=20_000)
    page.get_by_role("tab", name="History").click()
    return page


def rows(page: Page, table: str) -> sync_api.Locator:
    """A table's rows as shown (Gradio 6's Dataframe draws them as ``.virtual-row``; its ``<table>`` rows
    are a hidden copy for measuring)."""
    return page.locator(f"#{table} .virtual-row")


def test_a_recorded_session_is_listed_searched_played_downloaded_and_deleted(
    browser: Browser, recorded: Path, tmp_path: Path
) -> None:
    folder = next(p for p in recorded.iterdir() if p.is_dir())
    meta = read_meta(folder)
    kept = [
        e["text"].strip()
        for e in map(json.loads, (folder / "events.jsonl").read_text().splitlines())
        if e["type"] == "commentary_end" and not e["suppressed"] and e["text"].strip()
    ]
    cues = pysubs2.load(str(folder / "subtitles.vtt"))
    word = max(kept[-1].split(), key=len).strip(".,;")
    with AppServer(args=["--tts", "none", "--record-dir", str(recorded)]) as url:
        context = browser.new_context(viewport=VIEWPORT)
        page = open_history(context, url)
        expect(rows(page, "history-sessions")).to_have_count(1, timeout=15_000)
        expect(rows(page, "history-sessions").first).to_contain_text(str(meta.comments))

        textbox(page, "history-search").fill(word)
        page.locator("#history-find").click()
        hits = rows(page, "history-hits")
        expect(hits.first).to_contain_text(word, timeout=15_000)
        hits.first.locator("[role=button]").first.click()  # a hit opens its session
        expect(page.locator("#history-title").first).to_be_visible(timeout=15_000)
        expect(page.locator("#history-transcript li")).to_have_count(len(kept))

        page.locator("#history-make").click()
        player = page.locator("#history-player")
        expect(player).to_be_visible(timeout=90_000)
        page.wait_for_function("v => v.readyState >= 1 && v.textTracks[0].cues.length > 0", arg=player.element_handle())
        duration, shown = player.evaluate("v => [v.duration, v.textTracks[0].cues.length]")
        assert abs(duration - meta.duration) < 0.5 and shown == len(cues)
        first = cues[0]
        player.evaluate("(v, t) => { v.currentTime = t; }", (first.start + 100) / 1000)
        page.wait_for_function(
            "v => v.textTracks[0].activeCues && v.textTracks[0].activeCues.length", arg=player.element_handle()
        )
        active = player.evaluate("v => v.textTracks[0].activeCues[0].text")
        assert active.replace("\n", " ") == first.plaintext.replace("\n", " ")  # the subtitle shown is the cue
        doc_screenshot(page, "screenshot-history", tmp_path)

        href = page.locator('#history-files a[download="subtitles.srt"]').first.get_attribute("href")
        assert href is not None
        assert (
            context.request.get(href if href.startswith("http") else f"{url}/{href.lstrip('/')}").body()
            == (folder / "subtitles.srt").read_bytes()
        )
        for name in ("narrated.mp4", "subtitles.vtt", "events.jsonl", "narration.ogg"):
            expect(page.locator(f'#history-files a[download="{name}"]').first).to_be_attached()

        page.on("dialog", lambda dialog: dialog.accept())
        page.locator("#history-delete").click()
        expect(rows(page, "history-sessions")).to_have_count(0, timeout=15_000)
        assert not folder.exists()
        context.close()


def logged_in(browser: Browser, url: str, user: str, password: str) -> BrowserContext:
    context = browser.new_context(viewport=VIEWPORT)
    answer = context.request.post(f"{url}/login", form={"username": user, "password": password})
    assert answer.ok, answer.status
    return context


def test_on_a_shared_app_each_login_sees_only_its_own_sessions(
    browser: Browser, story_video: Path, tmp_path: Path
) -> None:
    root = tmp_path / "sessions"
    args = ["--tts", "none", "--host", "0.0.0.0", "--auth", "ann:pw-ann,bob:pw-bob", "--record-dir", str(root)]
    with AppServer(args=args) as url:
        ann = logged_in(browser, url, "ann", "pw-ann")
        page = ann.new_page()
        page.goto(url)
        expect(page.locator("#start")).to_be_visible(timeout=20_000)
        upload(page, story_video)
        page.locator("#start").click()
        expect_commentary(page, 1)
        page.locator("#stop").click()
        # The stopped session is over (its recording finished) before the History is read; the health route's
        # details need the login.
        wait_health(url, 0, cookie="; ".join(f"{c['name']}={c['value']}" for c in ann.cookies()))
        page.get_by_role("tab", name="History").click()
        expect(rows(page, "history-sessions")).to_have_count(1, timeout=15_000)
        assert read_meta(next(p for p in root.iterdir() if p.is_dir())).owner == "ann"

        bob = logged_in(browser, url, "bob", "pw-bob")
        other = open_history(bob, url)
        expect(other.locator("#history-sessions")).to_be_visible()
        expect(rows(other, "history-sessions")).to_have_count(0)
        textbox(other, "history-search").fill("the")
        other.locator("#history-find").click()
        expect(rows(other, "history-hits")).to_have_count(0)
        ann.close()
        bob.close()
