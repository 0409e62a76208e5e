"""The real app as a new user starts it (``python app.py``: no model, so the offline narrator; espeak-ng
speech) driven by a real headless Chromium.

One app server and one browser (with a fake camera clip) serve the whole module; each test opens
its own browser contexts (a context is a separate Gradio session, like a separate user) and leaves
the server with no session and no pipeline thread, which the autouse fixture checks before each
test. What is heard is read from the page's own player (``window.onlooker`` in
``webui/client.js``): ``heard`` is each chunk as the Web Audio clock scheduled it, against the
time the server's audio gate booked it; ``tapBlocks`` is what was actually rendered (10 ms blocks
of RMS from an AudioWorklet after the volume control).

What a real Chromium showed (Gradio 6.17.3, Chromium headless):

* Headless Chromium renders Web Audio in real time with no sound card; ``outputLatency`` is a few ms.
* An AudioContext made without a user activation stays ``suspended``; ``resume()`` in a real
  click's handler starts it. Playwright's own actions (even waiting on a locator) count as user
  activation, so the blocked-autoplay test lets the page report on the console before touching it.
* Closing a tab closes its WebSocket at once; the server tears the pipeline down after the
  reconnect grace (``webui.channel.RECONNECT_GRACE``, 3 s).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import pytest

from pipeline.recording.folder import read_meta
from tests.helpers.browser import (
    AppServer,
    browser_test_marks,
    screenshot,
    textbox,
)
from tests.helpers.media import Segment, render_frames, write_video
from tests.helpers.mjpeg_server import MjpegTestServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

from tests.helpers.app_page import (  # noqa: E402  (after the skip: the helpers need Playwright)
    PHONE,
    VIEWPORT,
    comments,
    doc_screenshot,
    expect_commentary,
    expect_live_picture_moves,
    expect_speech_heard,
    health,
    heard,
    jpeg,
    live_colour,
    live_image,
    looping_mjpeg,
    nearest_scene,
    no_error_badges,
    pick_mode,
    says,
    status_strip,
    upload,
    wait_health,
)

pytestmark = browser_test_marks()

GRACE = 3.0  # webui.channel.RECONNECT_GRACE
VOICED = 0.01  # RMS of a rendered 10 ms block above which something is heard (espeak speech is ~0.1)


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_server(app: AppServer) -> None:
    """Every test starts with no session, no tab and no pipeline thread (the previous one cleaned up)."""
    wait_health(app.url, 0, tabs=0)


# -- tests ------------------------------------------------------------------------------------------


def test_first_screen_explains_itself(open_tab, tmp_path: Path) -> None:
    page = open_tab()
    banner = page.locator("#fallback-banner")
    expect(banner).to_contain_text("offline narrator")
    expect(banner).to_contain_text("Next step")
    # Source, profile and preset sit with Start, each saying what it does, all above the fold.
    for elem in ("#source-mode", "#profile", "#preset", "#start"):
        box = page.locator(elem).bounding_box()
        assert box is not None and box["y"] + box["height"] <= VIEWPORT["height"], (elem, box)
    expect(page.locator("#preset")).to_contain_text("Everyday default")
    expect(page.locator("#profile")).to_contain_text("Describes what is on screen")
    expect(page.locator("#stop")).to_be_disabled()
    expect(page.locator("#mic-box")).to_contain_text("(off)")
    expect(page.locator("#mic-off")).to_be_hidden()  # the detail is one click away
    for pill in status_strip(page).locator(".pill").all():
        assert pill.get_attribute("title"), pill.inner_text()
    doc_screenshot(page, "screenshot-first-screen", tmp_path)


def test_webcam_one_preview_commentary_speech_and_stop(
    app: AppServer, open_tab, tmp_path: Path, user_data_home: Path
) -> None:
    page = open_tab()
    pick_mode(page, "Webcam")
    expect(page.locator("#upload")).to_be_hidden()
    expect(page.locator("#cam-preview")).to_be_visible(timeout=10_000)  # the camera, once, in the live area
    page.locator("#start").click()
    expect(page.locator("#stop")).to_be_enabled()
    texts = expect_commentary(page, 2)
    assert texts
    expect(status_strip(page)).to_have_attribute("data-source", "live", timeout=10_000)
    expect_speech_heard(page)
    assert page.locator("#live video:visible, #live img:visible").count() == 1
    assert health(app.url)["sessions"] == 1
    screenshot(page, tmp_path, "webcam")
    page.locator("#stop").click()
    expect(page.locator("#live-msg")).to_contain_text("Stopped")
    expect(page.locator("#stop")).to_be_disabled()
    wait_health(app.url, 0, timeout=10)
    # What the web app kept of it: the webcam's frames encoded as they came, and what was said.
    folder = max((user_data_home / "onlooker" / "sessions").glob("*_webcam*"), key=lambda p: p.stat().st_mtime)
    camera = read_meta(folder).cameras[0]
    assert camera.kind == "webcam" and camera.speaks and not read_meta(folder).interrupted
    with av.open(str(folder / camera.files["video"][0])) as video:
        stream = video.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in video.decode(stream)) >= 10  # seconds of the camera, at the rate it came
    assert (folder / camera.files["narration"]).stat().st_size > 0


def test_upload_streams_commentary_until_the_file_ends(app: AppServer, open_tab, story_video: Path, tmp_path) -> None:
    page = open_tab()
    upload(page, story_video)
    page.locator("#start").click()
    expect(status_strip(page)).to_have_attribute("data-source", "live", timeout=10_000)
    expect_live_picture_moves(page, width=320)
    expect_commentary(page, 2)
    expect(page.locator("#live-caption")).to_be_visible()  # the newest comment under the picture
    screenshot(page, tmp_path, "upload_live")
    expect(page.locator("#live-msg")).to_contain_text("The video has ended", timeout=40_000)
    expect(status_strip(page)).to_have_attribute("data-source", "ended")
    assert page.locator("#chat-pane .note", has_text="source ended").count() == 1
    assert len(comments(page)) >= 3  # 14 s with motion and cuts: more than a couple
    # A cut is reported once: a note, and the comment after it describes the new scene.
    assert page.locator("#chat-pane .comment", has_text=re.compile(r"^\s*Scene cut\.?\s*$")).count() == 0
    expect(page.locator("#stop")).to_be_disabled()
    # Closing the tab without Stop: its channel drops and the viewer is torn down after the grace.
    assert health(app.url)["sessions"] == 1
    closed = time.monotonic()
    page.context.close()
    wait_health(app.url, 0, tabs=0, timeout=GRACE + 5)
    print(f"tab-close teardown (ended upload): {time.monotonic() - closed:.2f} s")


def test_url_mjpeg_camera(app: AppServer, open_tab, tmp_path: Path) -> None:
    frames = render_frames([Segment(2, 0, moving=True), Segment(2, 3, moving=True)], 15, 320, 180)
    camera = MjpegTestServer()
    camera.routes["/video.mjpg"] = looping_mjpeg([jpeg(f) for f in frames], fps=15)
    try:
        page = open_tab()
        pick_mode(page, "URL")
        textbox(page, "url").fill(camera.url("/video.mjpg"))
        page.locator("#start").click()
        expect(status_strip(page)).to_have_attribute("data-source", "live", timeout=15_000)
        expect_live_picture_moves(page, width=320)
        expect_commentary(page, 2)
        screenshot(page, tmp_path, "url")
        page.locator("#stop").click()
        wait_health(app.url, 0, timeout=10)
    finally:
        camera.close()


def test_a_failed_start_is_said_once_in_the_live_area(app: AppServer, open_tab, tmp_path: Path) -> None:
    page = open_tab()
    pick_mode(page, "URL")
    textbox(page, "url").fill("gopher://x")
    page.locator("#start").click()
    problem = page.locator("#live-msg.problem")
    expect(problem).to_contain_text("Could not start", timeout=10_000)
    expect(problem).to_contain_text("unsupported scheme 'gopher://'")
    expect(problem).to_contain_text("Check the address")
    assert page.get_by_text("unsupported scheme", exact=False).count() == 1  # said once, nowhere else
    no_error_badges(page)
    expect(page.locator("#stop")).to_be_disabled()
    screenshot(page, tmp_path, "bad_url")

    pick_mode(page, "Upload")  # Start with no file chosen
    page.locator("#start").click()
    expect(problem).to_contain_text("choose a video file", timeout=10_000)
    assert page.get_by_text("unsupported scheme", exact=False).count() == 0  # the old failure is gone
    no_error_badges(page)
    expect(status_strip(page)).to_have_attribute("data-source", "idle")
    state = health(app.url)
    assert state["sessions"] == 0 and state["threads"] == [], state


def test_every_start_plays_its_own_speech_and_stop_silences_at_once(
    app: AppServer, open_tab, story_video: Path
) -> None:
    page = open_tab()
    upload(page, story_video)
    page.locator("#start").click()
    expect_speech_heard(page)
    page.evaluate("() => window.onlooker.listen()")
    page.locator("#start").click()  # Start twice
    page.wait_for_function("() => window.onlooker.run === 2")
    expect_speech_heard(page)
    page.locator("#stop").click()
    stopped = page.evaluate("() => Date.now() + window.onlooker.offset")
    wait_health(app.url, 0, timeout=10)
    # Let the page's audio graph render 1.5 s past the Stop before anything new can sound.
    page.wait_for_function("t => window.onlooker.tapBlocks.some(([at]) => at > t)", arg=stopped + 1500, timeout=10_000)
    after_stop = [rms for t, rms in page.evaluate("() => window.onlooker.tapBlocks") if t > stopped + 500]
    assert after_stop and max(after_stop) < VOICED, "speech was still heard 0.5 s after Stop"
    page.locator("#start").click()  # Start after Stop
    page.wait_for_function("() => window.onlooker.run === 3")
    expect_speech_heard(page)
    expect_commentary(page, 1)
    restarted = min(h["heard"] for h in heard(page) if h["run"] == 3)
    old = [
        h for h in heard(page) if h["run"] < 3 and min(h["heard"] + h["seconds"] * 1000, h.get("cut", 1e20)) > restarted
    ]
    assert old == [], "the old run's speech played after the new one started"
    page.locator("#stop").click()
    wait_health(app.url, 0, timeout=10)


def test_what_is_heard_stays_with_the_booking_over_a_minute(app: AppServer, open_tab, media_dir: Path) -> None:
    """60 s of commentary: each chunk plays within 1.5 s of the time the server booked it, and the lag
    does not grow; gaps and overlaps as rendered by the page's own audio graph."""
    scenes = [Segment(2.5, k % 5, moving=True) for k in range(28)]
    video = write_video(media_dir / "minute.mp4", scenes, width=320, height=180)
    page = open_tab()
    upload(page, video)
    page.locator("#preset").locator("input").fill("sniper")
    page.locator("#preset").locator("input").press("Enter")
    page.locator("#start").click()
    expect_speech_heard(page)
    page.evaluate("() => window.onlooker.listen()")
    page.wait_for_function(
        "() => window.onlooker.heard.filter(h => h.run === window.onlooker.run).length >= 45", timeout=90_000
    )
    chunks = [h for h in heard(page) if h["run"] == page.evaluate("window.onlooker.run")]
    lags = [h["heard"] - h["booked"] for h in chunks]
    half = len(lags) // 2
    first, second = float(np.median(lags[:half])), float(np.median(lags[half:]))
    print(f"heard - booked: median {np.median(lags):.0f} ms, max {max(lags):.0f} ms; halves {first:.0f} / {second:.0f}")
    assert max(lags) < 1500 and min(lags) > 0, lags
    assert second - first < 200, (first, second)  # not growing
    ends = [h["ctx"] + h["seconds"] for h in chunks]  # on the audio clock: epoch ms jitter by ms under load
    overlaps = sum(1 for end, nxt in zip(ends, [h["ctx"] for h in chunks[1:]], strict=False) if nxt < end - 0.001)
    assert overlaps == 0
    blocks = page.evaluate("() => window.onlooker.tapBlocks")
    assert sum(1 for _, rms in blocks if rms > VOICED) > 100  # speech was rendered, not just scheduled
    page.locator("#stop").click()
    wait_health(app.url, 0, timeout=10)


def test_tabs_in_one_browser_each_get_picture_chat_status_and_speech(
    app: AppServer, open_tab, media_dir: Path, tmp_path
) -> None:
    """Four tabs in one browser profile (one per-host connection pool): none holds a long-lived HTTP
    request, so all four stay live; each sees only its own video and words."""
    colours = (0, 4, 1, 3)
    tabs = []
    for k, scene in enumerate(colours):
        video = write_video(media_dir / f"tab{k}.mp4", [Segment(25, scene, moving=True)])
        page = open_tab(same_context=True)
        upload(page, video)
        tabs.append(page)
    pending: dict[str, float] = {}
    context = tabs[0].context
    context.on("request", lambda r: pending.__setitem__(r.url, time.monotonic()))
    context.on("requestfinished", lambda r: pending.pop(r.url, None))
    context.on("requestfailed", lambda r: pending.pop(r.url, None))
    for page in tabs:
        page.locator("#start").click()
    for page in tabs:
        expect(status_strip(page)).to_have_attribute("data-source", "live", timeout=20_000)
        expect_commentary(page, 1, timeout=40)
        expect_speech_heard(page, timeout_ms=60_000)
        live_image(page)
    assert health(app.url)["sessions"] == 4
    long_lived = [url for url, since in pending.items() if time.monotonic() - since > 5]
    assert long_lived == [], f"HTTP requests held open by the tabs: {long_lived}"
    for page in tabs:  # the status strip keeps changing in every tab
        before = status_strip(page).inner_html()
        page.wait_for_function(
            "old => document.querySelector('#status-box').innerHTML !== old", arg=before, timeout=10_000
        )
    for page, scene in zip(tabs, colours, strict=True):
        assert nearest_scene(live_colour(page), colours) == scene
    words = [" ".join(comments(page)) for page in tabs]
    assert says(words[0], "blue") and not says(words[0], "red"), words[0]
    assert says(words[1], "red") and not says(words[1], "blue"), words[1]
    screenshot(tabs[0], tmp_path, "tab_a")
    closed = time.monotonic()
    context.close()
    wait_health(app.url, 0, tabs=0, timeout=GRACE + 10)
    print(f"tab-close teardown (four tabs): {time.monotonic() - closed:.2f} s")


def test_phone_layout_shows_the_picture_and_the_newest_comment(
    open_tab, story_video: Path, app: AppServer, tmp_path: Path
) -> None:
    page = open_tab(viewport=PHONE)
    start = page.locator("#start").bounding_box()
    assert start is not None and start["y"] + start["height"] < PHONE["height"] * 0.8, start  # no scrolling to Start
    upload(page, story_video)
    page.locator("#start").click()
    expect_commentary(page, 1)
    page.evaluate("() => window.scrollTo(0, 0)")
    picture = live_image(page).bounding_box()
    caption = page.locator("#live-caption")
    expect(caption).to_be_visible()
    box = caption.bounding_box()
    assert picture is not None and box is not None
    assert picture["y"] + picture["height"] <= PHONE["height"] and box["y"] + box["height"] <= PHONE["height"]
    doc_screenshot(page, "screenshot-phone", tmp_path)
    page.locator("#stop").click()
    wait_health(app.url, 0, timeout=10)


def test_running_session_screenshot(open_tab, story_video: Path, app: AppServer, tmp_path: Path) -> None:
    page = open_tab()
    upload(page, story_video)
    page.locator("#start").click()
    expect_commentary(page, 3)
    live_image(page)
    doc_screenshot(page, "screenshot-running", tmp_path)
    page.locator("#stop").click()
    wait_health(app.url, 0, timeout=10)


# Starts a URL session from inside the page with script clicks, which are no user activation.
# Playwright's own actions (even waiting on a locator) count as one, so until the page reports
# on the console the test must not touch it.
SCRIPTED_START = """
if (location.hash.startsWith('#autostart=')) {
  const target = decodeURIComponent(location.hash.slice('#autostart='.length));
  const say = console.info.bind(console);  // bound now: the app may replace console.log later
  let stage = 0;
  const timer = setInterval(() => {
    const radio = document.querySelector('#source-mode input[value="URL"]');
    const box = document.querySelector('#url textarea, #url input');
    const note = document.getElementById('autoplay-note');
    const ready = window.onlooker && window.onlooker.ws && window.onlooker.ws.readyState === 1;
    if (stage === 0 && radio && ready && !box) radio.click();
    else if (stage === 0 && box) {
      box.value = target;
      box.dispatchEvent(new Event('input', { bubbles: true }));
      stage = 2;
    } else if (stage === 2) {
      say('activation at start: ' + navigator.userActivation.hasBeenActive);
      document.getElementById('start').click();
      stage = 3;
    } else if (stage === 3 && note && note.style.display === 'block') {
      // Read the page now: any Playwright call after this may count as user activation.
      say('autoplay blocked; heard: ' + window.onlooker.heard.length + '; note: ' + note.innerText);
      clearInterval(timer);
    }
  }, 200);
}
"""


def test_blocked_autoplay_says_what_to_do_and_a_click_starts_the_speech(
    app: AppServer, chromium: Browser, tmp_path: Path
) -> None:
    """A session started without any user activation: the browser refuses to start the audio, the
    page says what to do, and the user's next real click starts the speech."""
    frames = render_frames([Segment(2, 0, moving=True), Segment(2, 3, moving=True)], 15, 320, 180)
    camera = MjpegTestServer()
    camera.routes["/video.mjpg"] = looping_mjpeg([jpeg(f) for f in frames], fps=15)
    context = chromium.new_context(viewport=VIEWPORT)
    try:
        context.add_init_script(SCRIPTED_START)
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.goto(f"{app.url}/#autostart={camera.url('/video.mjpg')}")
        try:
            blocked = page.wait_for_event(
                "console", lambda m: m.text.startswith("autoplay blocked"), timeout=40_000
            ).text
        except sync_api.TimeoutError:
            raise AssertionError(f"the page never reported blocked autoplay; console: {console}") from None
        assert "activation at start: false" in console, console
        assert "heard: 0;" in blocked, blocked
        assert "Click anywhere on the page" in blocked, blocked
        screenshot(page, tmp_path, "autoplay_blocked")
        page.locator("#chat-pane").click()  # a real click anywhere
        expect_speech_heard(page)
        expect(page.locator("#autoplay-note")).to_be_hidden()
        page.locator("#stop").click()
        wait_health(app.url, 0, timeout=10)
    finally:
        context.close()
        camera.close()


def test_speech_controls_switch_voice_and_mute(app: AppServer, open_tab, story_video: Path) -> None:
    page = open_tab()
    engine = page.locator("#speech-engine input")
    expect(engine).to_have_value("espeak-ng (offline)")
    assert engine.evaluate("e => e.scrollWidth <= e.clientWidth")  # the label is not clipped
    voice = page.locator("#voice input")
    expect(voice).to_have_value("en-us")
    voice.fill("de")
    voice.press("Enter")
    page.locator("#mute input").check()
    upload(page, story_video)
    page.locator("#start").click()
    expect_commentary(page, 2)
    assert heard(page) == []  # muted: nothing was synthesised or played
    page.locator("#mute input").uncheck()
    expect_speech_heard(page)
    page.locator("#stop").click()
    wait_health(app.url, 0, timeout=10)


def test_the_offline_narrator_says_what_it_does_with_an_instruction(
    app: AppServer, open_tab, story_video: Path
) -> None:
    page = open_tab()
    upload(page, story_video)
    page.locator("#start").click()
    expect_commentary(page, 1)
    box = textbox(page, "instruction")
    box.fill("what is the score of the match?")
    box.press("Enter")
    toast = page.locator('[data-testid="toast-text"]').last
    expect(toast).to_contain_text("cannot follow", timeout=10_000)
    assert "Next comments will" not in page.content()
    page.locator("#stop").click()
    wait_health(app.url, 0, timeout=10)
