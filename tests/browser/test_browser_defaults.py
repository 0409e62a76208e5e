"""Save as default as a user meets it in a real Chromium: change the source, profile, preset and mute, add a watch
rule, press Save as default; the settings file in the user's config folder holds them (the camera's password
left out, as the toast says), and a new app process opens its page with them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from tests.helpers.browser import ROOT, AppServer, browser_test_marks, offline_guard

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

from tests.helpers.app_page import VIEWPORT, add_rule, pick_mode, rule_row  # noqa: E402  (needs Playwright)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = browser_test_marks()

CAMERA = "rtsp://admin:hunter2@127.0.0.1:8554/cam"


@contextlib.contextmanager
def app_page(chromium: Browser) -> Iterator[Page]:
    """A fresh app process (offline narrator, espeak-ng) and its page in a new browser context, checked to reach
    nothing beyond loopback and to have logged no traceback."""
    server = AppServer(args=["--tts", "espeak"])
    with server, open_page(chromium, server.url) as page:
        yield page
    _, stderr = server.output()
    assert "Traceback (most recent call last)" not in stderr, stderr[-4000:]


@contextlib.contextmanager
def open_page(chromium: Browser, url: str) -> Iterator[Page]:
    """The app's page in a new browser context (a new Gradio session), once its channel is open."""
    context = chromium.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        with offline_guard(page) as outside:
            page.goto(url)
            expect(page.locator("#start")).to_be_visible(timeout=20_000)
            page.wait_for_function(
                "() => window.onlooker && window.onlooker.ws && window.onlooker.ws.readyState === 1", timeout=20_000
            )
            yield page
        assert outside == [], f"the page reached beyond loopback: {outside}"
    finally:
        context.close()


def choose(page: Page, elem_id: str, typed: str, info: str) -> None:
    """Pick a dropdown's entry by typing its name, and wait for the line under it to describe the new pick."""
    box = page.locator(f"#{elem_id} input")
    box.fill(typed)
    box.press("Enter")
    expect(page.locator(f"#{elem_id}")).to_contain_text(info, timeout=10_000)


def test_save_as_default_writes_the_file_and_the_next_start_opens_with_it(
    chromium: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # the user's config folder, empty
    saved = tmp_path / "config" / "onlooker" / "onlooker.yaml"

    with app_page(chromium) as page:
        pick_mode(page, "URL")
        page.locator("#url textarea, #url input").first.fill(CAMERA)
        choose(page, "profile", "Sports", "Energetic play-by-play")
        choose(page, "preset", "owl", "Patient and sparse")
        page.locator("#mute input").check()
        add_rule(page, "left=motion on the left")
        expect(rule_row(page, "left")).to_have_attribute("data-state", "active", timeout=10_000)
        page.locator("#save-default").click()
        toast = page.locator('[data-testid="toast-text"]').last
        expect(toast).to_contain_text(f"Saved as defaults in {saved}.", timeout=10_000)
        expect(toast).to_contain_text("user name and password were left out")

    text = saved.read_text()
    assert "hunter2" not in text and "admin" not in text, text
    data = yaml.safe_load(text)
    assert {k: data[k] for k in ("source_kind", "source", "profile", "preset", "mute", "watch")} == {
        "source_kind": "url",
        "source": "rtsp://127.0.0.1:8554/cam",
        "profile": "sports",
        "preset": "owl",
        "mute": True,
        "watch": ["left=motion on the left"],
    }
    assert not (ROOT / "onlooker.yaml").exists()  # never into the folder the app was started from

    with app_page(chromium) as page:
        expect(page.locator("#source-mode input[value='URL']")).to_be_checked()
        expect(page.locator("#url textarea, #url input").first).to_have_value("rtsp://127.0.0.1:8554/cam")
        expect(page.locator("#upload")).to_be_hidden()
        expect(page.locator("#profile input")).to_have_value("Sports commentator")
        expect(page.locator("#preset input")).to_have_value("Owl")
        expect(page.locator("#mute input")).to_be_checked()
        page.wait_for_function("() => window.onlooker.muted === true", timeout=5_000)  # the player knows it too
        expect(rule_row(page, "left")).to_have_attribute("data-state", "active", timeout=10_000)
