"""The app server and the browser the browser tests share: one ``python app.py`` (offline narrator,
espeak-ng speech) and one headless Chromium with a fake camera clip per module; ``open_tab`` opens the
app in a fresh browser context (a separate Gradio session, like another user) and checks that the page
reached nothing beyond loopback."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.helpers.browser import AppServer, launch_browser, make_fake_camera_clip, offline_guard

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

# Playwright is imported inside the fixtures: a conftest cannot skip, the test modules that use these do
# (``pytest.importorskip``) when it is missing.


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    server = AppServer(args=["--tts", "espeak"])
    with server:
        yield server
    _, stderr = server.output()
    (tmp_path_factory.getbasetemp() / "app-stderr.txt").write_text(stderr)
    assert "Traceback (most recent call last)" not in stderr, stderr[-4000:]
    assert "Warning" not in stderr, stderr[-4000:]  # a quiet terminal: no warning per tick


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    clip = make_fake_camera_clip(tmp_path_factory.mktemp("camera") / "camera.y4m", seconds=2)
    with sync_playwright() as pw:
        browser = launch_browser(pw, fake_camera=clip)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_tab(chromium: Browser, app: AppServer) -> Iterator[Callable[..., Page]]:
    """Open the app in a browser context (a new Gradio session); all are closed afterwards.

    ``same_context`` opens another tab in the first context: one browser profile, as a user's
    second tab, sharing its per-host connection limit. Each page is watched for requests beyond
    loopback: the app must work offline (no CDN, fonts or analytics).
    """
    from playwright.sync_api import expect

    from tests.helpers.app_page import VIEWPORT

    contexts = []
    watched: list[list[str]] = []
    with contextlib.ExitStack() as guards:

        def open_(same_context: bool = False, viewport: dict | None = None) -> Page:
            if same_context and contexts:
                context = contexts[0]
            else:
                context = chromium.new_context(viewport=viewport or VIEWPORT)
                contexts.append(context)
            page = context.new_page()
            watched.append(guards.enter_context(offline_guard(page)))
            page.goto(app.url)
            # the page's first load fetches Gradio's config and scripts: seconds alone, and it once took over 20 s
            # with five test jobs on two cores (the wait ends as soon as the page is there)
            expect(page.locator("#start")).to_be_visible(timeout=40_000)
            page.wait_for_function(
                "() => window.onlooker && window.onlooker.ws && window.onlooker.ws.readyState === 1", timeout=20_000
            )
            return page

        yield open_
        for context in contexts:
            context.close()
    outside = [url for urls in watched for url in urls]
    assert outside == [], f"the page reached beyond loopback: {outside}"
