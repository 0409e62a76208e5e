"""The app's page as the browser tests read it: the health route, the source panel, the chat pane, the
live picture, the page's own player (``window.onlooker``), uploads, an MJPEG camera route and the
README's screenshots. Selectors and the player's fields are ``webui/app.py``'s and ``webui/client.js``'s."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import httpx
import numpy as np
from playwright import sync_api
from playwright.sync_api import expect

from tests.helpers.media import scene_background
from tests.helpers.mjpeg_server import Handler, multipart

if TYPE_CHECKING:
    from playwright.sync_api import Page

VIEWPORT = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
DOCS = Path(__file__).resolve().parents[2] / "docs"
# Set to refresh the README's screenshots in docs/ (otherwise they go to the test's temporary folder only).
REFRESH_DOCS = bool(os.environ.get("ONLOOKER_DOCS_SCREENSHOTS"))


def health(url: str, cookie: str = "") -> dict:
    """The health route's details; behind ``--auth`` they need a login's ``cookie`` header."""
    return httpx.get(f"{url}/onlooker/health", headers={"Cookie": cookie}, timeout=10, trust_env=False).json()


def wait_health(url: str, sessions: int, tabs: int | None = None, timeout: float = 15.0, cookie: str = "") -> float:
    """Poll the health route until it shows ``sessions`` (and, for 0, no pipeline thread); seconds taken."""
    started = time.monotonic()
    while True:
        state = health(url, cookie)
        if (
            state["sessions"] == sessions
            and (sessions or state["threads"] == [])
            and (tabs is None or state["tabs"] == tabs)
        ):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"health did not reach {sessions} session(s), {tabs} tab(s) in {timeout} s: {state}")
        time.sleep(0.05)


def pick_mode(page: Page, mode: str) -> None:
    page.locator("#source-mode").get_by_label(mode).check()


def status_strip(page: Page) -> sync_api.Locator:
    return page.locator("#status-box .status-strip")


def comments(page: Page) -> list[str]:
    """The finished comments in the chat pane, oldest first."""
    return page.locator('#chat-pane .comment[data-state="done"] .text').all_inner_texts()


def expect_commentary(page: Page, count: int = 2, timeout: float = 30.0) -> list[str]:
    """Wait for ``count`` finished comments; each bubble carries its media time."""
    page.wait_for_function(
        "n => document.querySelectorAll('#chat-pane .comment[data-state=\"done\"]').length >= n",
        arg=count,
        timeout=timeout * 1000,
    )
    clocks = page.locator("#chat-pane .comment .clock").all_inner_texts()
    assert all(re.fullmatch(r"\d\d:\d\d\.\d", c) for c in clocks), clocks
    return comments(page)


def live_image(page: Page) -> sync_api.Locator:
    """The live picture, once it has shown a frame."""
    img = page.locator("#live-img")
    expect(img).to_be_visible(timeout=15_000)
    page.wait_for_function("img => img.naturalWidth > 0", arg=img.element_handle(), timeout=15_000)
    return img


def expect_live_picture_moves(page: Page, width: int, timeout: float = 10.0) -> None:
    """The live picture has the source's size and changes (it is a stream, not one still)."""
    img = live_image(page)
    shown = img.evaluate("img => [img.naturalWidth, img.naturalHeight, img.src.slice(0, 40)]")
    assert shown[0] == width, f"the live picture is {shown[0]}x{shown[1]} ({shown[2]}…), not the source's width {width}"
    first = img.screenshot()
    deadline = time.monotonic() + timeout
    while img.screenshot() == first:
        assert time.monotonic() < deadline, f"the live picture did not change within {timeout} s"
        time.sleep(0.2)


def expect_speech_heard(page: Page, timeout_ms: float = 40_000) -> None:
    """The page's player has played speech of the current run (its clock is past a chunk's start)."""
    page.wait_for_function(
        """() => { const o = window.onlooker; const now = Date.now() + o.offset;
                   return o.ctx && o.ctx.state === 'running'
                     && o.heard.some(h => h.run === o.run && h.heard < now); }""",
        timeout=timeout_ms,
    )


def heard(page: Page) -> list[dict]:
    return page.evaluate("() => window.onlooker.heard")


def live_colour(page: Page) -> np.ndarray:
    """Mean RGB of the live picture as the page shows it."""
    png = np.frombuffer(live_image(page).screenshot(), np.uint8)
    bgr = cv2.imdecode(png, cv2.IMREAD_COLOR)
    return bgr.reshape(-1, 3).mean(axis=0)[::-1]


def nearest_scene(colour: np.ndarray, scenes: tuple[int, ...]) -> int:
    means = {s: scene_background(s, 320, 180).reshape(-1, 3).mean(axis=0) for s in scenes}
    return min(scenes, key=lambda s: float(np.abs(means[s] - colour).sum()))


def says(text: str, word: str) -> bool:
    """Whether ``word`` occurs as a whole word ("centred" does not say "red")."""
    return re.search(rf"\b{word}\b", text) is not None


def upload(page: Page, video: Path) -> None:
    """Put a file in the upload box and wait until Gradio has it (its row links to the server's copy)."""
    page.locator("#upload input[type=file]").set_input_files(str(video))
    link = page.locator(f'#upload a[href*="/gradio_api/file="][href$="/{video.name}"]')
    expect(link).to_have_count(1, timeout=15_000)


def jpeg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]))[1].tobytes()


def looping_mjpeg(jpegs: list[bytes], fps: float) -> Callable[[Handler], None]:
    """A camera-like MJPEG route: the JPEGs in a loop at ``fps`` until the server closes."""

    def route(handler: Handler) -> None:
        handler.start_stream("multipart/x-mixed-replace; boundary=frame")
        k = 0
        while not handler.closing.is_set():
            handler.wfile.write(multipart([jpegs[k % len(jpegs)]]))
            handler.wfile.flush()
            k += 1
            handler.closing.wait(1 / fps)

    return route


def doc_screenshot(page: Page, name: str, tmp_path: Path) -> None:
    """The viewport as a user sees it, for the README (docs/NAME.png when refreshing) and the test's folder."""
    page.screenshot(path=str(tmp_path / f"{name}.png"))
    if REFRESH_DOCS:
        page.screenshot(path=str(DOCS / f"{name}.png"))


def no_error_badges(page: Page) -> None:
    """Gradio's red error state never covers the live area or the chat."""
    for where in ("#live", "#chat", "#status"):
        assert page.locator(f"{where} .error, {where} [data-testid='status-tracker'].error").count() == 0, where
    assert page.locator('[data-testid="toast-body"].error').count() == 0


def add_rule(page: Page, text: str) -> None:
    """Type a watch rule into the rules box and press Add; the box answers over the channel."""
    page.locator("#rule-input textarea, #rule-input input").first.fill(text)
    page.locator("#rule-add").click()


def rule_row(page: Page, name: str) -> sync_api.Locator:
    """A rule's row in the rules box (``data-state``: active, paused or alert)."""
    return page.locator(f'#rules-box .rule[data-rule="{name}"]')


def expect_alert(page: Page, timeout: float = 30.0) -> sync_api.Locator:
    """Wait for the chat's first alert bubble whose snapshot has decoded, and return it."""
    snap = page.locator("#chat-pane .alert-msg img.alert-snap").first
    expect(snap).to_be_visible(timeout=timeout * 1000)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=snap.element_handle(), timeout=5_000)
    return page.locator("#chat-pane .alert-msg").first
