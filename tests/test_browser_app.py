"""The real app (``python app.py --backend opencv``, speech on) driven by a real headless Chromium.

One app server and one browser (with a fake camera clip) serve the whole module; each test opens
its own browser contexts (a context is a separate Gradio session, like a separate user) and leaves
the server with no session and no pipeline thread, which the autouse fixture checks before each
test. Covered: the three source modes (Webcam, Upload, URL) from the click on Start to commentary
in the chatbot, a moving live picture and spoken audio; a bad URL (an error toast and nothing
started); and two tabs at once (each sees only its own video and words, and closing them tears
both pipelines down).

What a real Chromium showed with Gradio 6.17.3 (beyond ``tests/browser.py``):

* The live view ``<img>`` stays "hidden" to Playwright until its first MJPEG frame arrives (no
  size yet): wait for ``state="attached"``, then for ``naturalWidth > 0``.
* The streaming ``gr.Audio`` plays from a ``blob:`` URL (MediaSource), not ``/gradio_api/file=``.
  ``played.length > 0`` proves it played; ``paused`` alone can flip back between utterances.
* ``gr.Error(..., title=...)``: the toast's title reads "Error" (Gradio 6 groups toasts by type);
  the message is in ``[data-testid="toast-text"]``.
* Closing a tab fires ``demo.unload`` as soon as Gradio's ``/heartbeat`` SSE connection drops
  (Starlette notices the disconnect at once): the pipeline is gone within about 0.1-0.3 s.
* The bot messages' ``aria-label`` is "bot's message: " plus the raw Markdown, so the backtick
  timestamp is visible there; in the rendered message it is a ``<code>`` element.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import httpx
import numpy as np
import pytest
from browser import (
    AppServer,
    audio_element,
    chatbot_messages,
    chromium_available,
    launch_browser,
    make_fake_camera_clip,
    offline_guard,
    screenshot,
    start_webcam_stream,
    textbox,
)
from media import Segment, render_frames, scene_background, write_video
from mjpeg_server import Handler, MjpegTestServer, multipart

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not chromium_available(),
        reason="/usr/bin/chromium is missing (install the Debian package 'chromium': scripts/setup.sh --dev)",
    ),
]

COMMENT = re.compile(r"^`\d\d:\d\d\.\d` \S")  # a finished comment's raw Markdown: backtick clock, then words
CLOCK = re.compile(r"^\d\d:\d\d\.\d$")
VIEWPORT = {"width": 1280, "height": 900}
# Counts real ``playing`` events of every media element the page plays (listeners go on the
# element: media events do not leave the shadow roots Gradio's players live in).
PLAYING_PROBE = """
window.playingEvents = 0;
const probedPlay = HTMLMediaElement.prototype.play;
HTMLMediaElement.prototype.play = function (...args) {
  if (!this.probed) {
    this.probed = true;
    this.addEventListener('playing', () => { window.playingEvents += 1; });
  }
  return probedPlay.apply(this, args);
};
"""


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    server = AppServer(args=["--backend", "opencv"])
    with server:
        yield server
    _, stderr = server.output()
    (tmp_path_factory.getbasetemp() / "app-stderr.txt").write_text(stderr)
    # Gradio prints a traceback for each gr.Error (the bad-input test makes two); nothing else may fail.
    tracebacks = stderr.count("Traceback (most recent call last)")
    user_errors = len(re.findall(r"^gradio\.exceptions\.Error: ", stderr, re.MULTILINE))
    assert tracebacks == user_errors, stderr[-4000:]


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    clip = make_fake_camera_clip(tmp_path_factory.mktemp("camera") / "camera.y4m", seconds=2)
    with sync_api.sync_playwright() as pw:
        browser = launch_browser(pw, fake_camera=clip)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(autouse=True)
def clean_server(app: AppServer) -> None:
    """Every test starts with no session and no pipeline thread (the previous one cleaned up)."""
    wait_health(app.url, 0)


@pytest.fixture
def open_tab(chromium: Browser, app: AppServer) -> Iterator[Callable[[], Page]]:
    """Open the app in a fresh browser context (a new Gradio session); all are closed afterwards.

    Each page is watched for requests beyond loopback: the app must work offline (no CDN, fonts
    or analytics), which is checked once the test is done.
    """
    contexts = []
    watched: list[list[str]] = []  # one list per page, filled as it runs
    with contextlib.ExitStack() as guards:

        def open_() -> Page:
            context = chromium.new_context(viewport=VIEWPORT)
            context.add_init_script(PLAYING_PROBE)
            contexts.append(context)
            page = context.new_page()
            watched.append(guards.enter_context(offline_guard(page)))
            page.goto(app.url)
            expect(page.locator("#start")).to_be_visible(timeout=20_000)
            return page

        yield open_
        for context in contexts:
            context.close()
    outside = [url for urls in watched for url in urls]
    assert outside == [], f"the page reached beyond loopback: {outside}"


# -- helpers ----------------------------------------------------------------------------------------


def health(url: str) -> dict:
    return httpx.get(f"{url}/onlooker/health", timeout=10, trust_env=False).json()


def wait_health(url: str, sessions: int, timeout: float = 15.0) -> float:
    """Poll the health route until it shows ``sessions`` (and, for 0, no pipeline thread); seconds taken."""
    started = time.monotonic()
    while True:
        state = health(url)
        if state["sessions"] == sessions and (sessions or state["threads"] == []):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"health did not reach {sessions} session(s) within {timeout} s: {state}")
        time.sleep(0.05)


def pick_mode(page: Page, mode: str) -> None:
    page.locator("#source-mode").get_by_label(mode).check()


def status_source(page: Page) -> sync_api.Locator:
    return page.locator("#status .status-strip")


def bot_texts(page: Page) -> list[str]:
    """The raw Markdown of every bot message (from its aria-label)."""
    labels = chatbot_messages(page, "chat").evaluate_all("els => els.map(e => e.getAttribute('aria-label') || '')")
    return [label.removeprefix("bot's message: ") for label in labels]


def expect_commentary(page: Page, count: int = 2, timeout: float = 25.0) -> list[str]:
    """Wait for ``count`` finished comments; check each starts with a timestamp rendered as code."""
    deadline = time.monotonic() + timeout
    while True:
        texts = [t for t in bot_texts(page) if COMMENT.match(t)]
        if len(texts) >= count:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} comments within {timeout} s: {bot_texts(page)}")
        time.sleep(0.2)
    clocks = chatbot_messages(page, "chat").locator("code").all_inner_texts()
    assert len(clocks) >= count and all(CLOCK.match(c) for c in clocks), clocks
    return texts


def live_image(page: Page) -> sync_api.Locator:
    """The live view's <img>, once it has shown a frame; returns it."""
    img = page.locator("#live img.live-view")
    img.wait_for(state="attached", timeout=10_000)
    assert re.fullmatch(r"onlooker/live/[\w-]+\.mjpg", img.get_attribute("src") or "")
    page.wait_for_function("img => img.naturalWidth > 0", arg=img.element_handle(), timeout=15_000)
    return img


def expect_live_picture_moves(page: Page, width: int, timeout: float = 10.0) -> None:
    """The live <img> has the source's size and its pixels change (it is a stream, not one still)."""
    img = live_image(page)
    assert img.evaluate("img => img.naturalWidth") == width
    first = img.screenshot()
    deadline = time.monotonic() + timeout
    while img.screenshot() == first:
        assert time.monotonic() < deadline, f"the live picture did not change within {timeout} s"
        time.sleep(0.2)


def expect_speech_played(page: Page, timeout_ms: float = 30_000) -> None:
    """The streaming audio player got a source, fired ``playing`` and played some of it (autoplay)."""
    audio = audio_element(page, "speech")
    expect(audio).to_have_attribute("src", re.compile(r"^(blob:|https?://)"), timeout=timeout_ms)
    page.wait_for_function("() => window.playingEvents > 0", timeout=timeout_ms)
    page.wait_for_function(
        "a => a.played.length > 0 && a.currentTime > 0", arg=audio.element_handle(), timeout=timeout_ms
    )


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
    """Put a file in the upload box and wait until Gradio has it (its row links to the server's copy).

    Not the row's text: Gradio splits the name into stem and suffix spans, and the text sometimes
    reads "red .mp4".
    """
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


# -- tests ------------------------------------------------------------------------------------------


def test_webcam_commentary_live_view_speech_and_stop(app: AppServer, open_tab, tmp_path: Path) -> None:
    page = open_tab()
    pick_mode(page, "Webcam")
    expect(page.locator("#webcam")).to_be_visible()
    expect(page.locator("#upload")).to_be_hidden()
    page.locator("#start").click()
    page.locator("#live img.live-view").wait_for(state="attached", timeout=10_000)
    start_webcam_stream(page, "webcam")

    texts = expect_commentary(page, 2)
    assert texts[0].startswith("`00:0"), texts
    expect_live_picture_moves(page, width=640)
    expect(status_source(page)).to_have_attribute("data-source", "live", timeout=10_000)
    expect_speech_played(page)
    assert health(app.url)["sessions"] == 1
    screenshot(page, tmp_path, "webcam")

    page.locator("#stop").click()
    expect(page.locator("#live .live-idle")).to_be_visible(timeout=10_000)
    wait_health(app.url, 0, timeout=10)
    page.context.close()
    wait_health(app.url, 0, timeout=10)  # the webcam keeps sending until the tab closes: nothing restarts


def test_upload_streams_commentary_until_the_file_ends(app: AppServer, open_tab, story_video: Path, tmp_path) -> None:
    page = open_tab()
    expect(page.locator("#upload")).to_be_visible()
    upload(page, story_video)
    page.locator("#start").click()

    expect(status_source(page)).to_have_attribute("data-source", "live", timeout=10_000)
    expect_live_picture_moves(page, width=320)
    expect_commentary(page, 2)
    screenshot(page, tmp_path, "upload_live")
    expect(status_source(page)).to_have_attribute("data-source", "ended", timeout=30_000)
    expect(chatbot_messages(page, "chat", "user").last).to_contain_text("source ended", timeout=10_000)
    assert len(expect_commentary(page, 3)) >= 3  # 14 s with motion and cuts: more than a couple
    screenshot(page, tmp_path, "upload_ended")

    # Closing the tab without Stop: Gradio's unload (heartbeat disconnect) tears the viewer down.
    assert health(app.url)["sessions"] == 1
    closed = time.monotonic()
    page.context.close()
    wait_health(app.url, 0, timeout=5)
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
        expect(status_source(page)).to_have_attribute("data-source", "live", timeout=15_000)
        expect_live_picture_moves(page, width=320)
        expect_commentary(page, 2)
        screenshot(page, tmp_path, "url")
        page.locator("#stop").click()
        wait_health(app.url, 0, timeout=10)
    finally:
        camera.close()


def test_bad_input_shows_an_error_toast_and_starts_nothing(app: AppServer, open_tab, tmp_path: Path) -> None:
    page = open_tab()
    pick_mode(page, "URL")
    textbox(page, "url").fill("gopher://x")
    page.locator("#start").click()
    toast = page.locator('[data-testid="toast-body"].error')
    expect(toast).to_be_visible(timeout=10_000)
    expect(toast.locator('[data-testid="toast-text"]')).to_contain_text("unsupported scheme 'gopher://'")
    screenshot(page, tmp_path, "bad_url")
    toast.locator('[data-testid="toast-close"]').click()
    expect(toast).to_have_count(0)

    pick_mode(page, "Upload")  # Start with no file chosen
    page.locator("#start").click()
    expect(page.locator('[data-testid="toast-text"]')).to_contain_text("choose a video file", timeout=10_000)

    expect(page.locator("#live .live-idle")).to_be_visible()
    expect(page.locator("#live img")).to_have_count(0)
    expect(status_source(page)).to_have_attribute("data-source", "idle")
    state = health(app.url)
    assert state["sessions"] == 0 and state["threads"] == [], state


def test_two_tabs_see_only_their_own_video_and_words(app: AppServer, open_tab, media_dir: Path, tmp_path) -> None:
    # A blue scene (0) for tab A, a red one (4) for tab B: the narrator names the dominant colour.
    video_a = write_video(media_dir / "blue.mp4", [Segment(12, 0, moving=True)])
    video_b = write_video(media_dir / "red.mp4", [Segment(5, 4, moving=True)])
    tab_a, tab_b = open_tab(), open_tab()
    upload(tab_a, video_a)
    upload(tab_b, video_b)

    tab_a.locator("#start").click()
    expect(status_source(tab_a)).to_have_attribute("data-source", "live", timeout=10_000)
    time.sleep(2)
    tab_b.locator("#start").click()
    expect(status_source(tab_b)).to_have_attribute("data-source", "live", timeout=10_000)
    assert health(app.url)["sessions"] == 2

    src_a = live_image(tab_a).get_attribute("src")
    src_b = live_image(tab_b).get_attribute("src")
    assert src_a != src_b
    assert nearest_scene(live_colour(tab_a), (0, 4)) == 0
    assert nearest_scene(live_colour(tab_b), (0, 4)) == 4

    expect_commentary(tab_a, 1)
    expect_commentary(tab_b, 1)
    # B's clip is shorter and started later: it ends while A still plays, and only B hears of it.
    expect(status_source(tab_b)).to_have_attribute("data-source", "ended", timeout=15_000)
    expect(status_source(tab_a)).to_have_attribute("data-source", "live")
    assert not any("source ended" in t for t in chatbot_messages(tab_a, "chat", "user").all_inner_texts())
    screenshot(tab_a, tmp_path, "tab_a")
    screenshot(tab_b, tmp_path, "tab_b")

    words_a, words_b = " ".join(bot_texts(tab_a)), " ".join(bot_texts(tab_b))
    assert says(words_a, "blue") and not says(words_a, "red"), words_a
    assert says(words_b, "red") and not says(words_b, "blue"), words_b
    assert health(app.url)["sessions"] == 2

    closed = time.monotonic()
    tab_a.context.close()
    tab_b.context.close()
    wait_health(app.url, 0, timeout=5)
    print(f"tab-close teardown (two tabs, one still live): {time.monotonic() - closed:.2f} s")


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
    if (stage === 0 && radio && !box) radio.click();  // again until the app, once live, shows the box
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
      say('autoplay blocked; playing events: ' + (window.playingEvents || 0) + '; note: ' + note.innerText);
      clearInterval(timer);
    }
  }, 200);
}
"""


def test_blocked_autoplay_says_what_to_do_and_a_click_starts_the_speech(
    app: AppServer, chromium: Browser, tmp_path: Path
) -> None:
    """A session started without any user activation: the browser refuses to autoplay, the page
    says what to do, and the user's next real click starts the speech."""
    frames = render_frames([Segment(2, 0, moving=True), Segment(2, 3, moving=True)], 15, 320, 180)
    camera = MjpegTestServer()
    camera.routes["/video.mjpg"] = looping_mjpeg([jpeg(f) for f in frames], fps=15)
    context = chromium.new_context(viewport=VIEWPORT)
    try:
        context.add_init_script(PLAYING_PROBE)
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
        # What the page saw before the test touched it (Playwright's evaluate and waits are activations).
        assert "playing events: 0;" in blocked, blocked
        assert "Click anywhere on the page" in blocked, blocked
        screenshot(page, tmp_path, "autoplay_blocked")
        note = page.locator("#autoplay-note")
        page.locator("#chat").click()  # a real click anywhere
        page.wait_for_function("() => window.playingEvents > 0", timeout=10_000)
        expect(note).to_be_hidden()
        page.locator("#stop").click()
        wait_health(app.url, 0, timeout=10)
    finally:
        context.close()
        camera.close()


def test_speech_controls_switch_voice_and_mute(app: AppServer, open_tab, story_video: Path) -> None:
    page = open_tab()
    engine = page.locator("#speech-engine input")
    expect(engine).to_have_value("espeak-ng (offline)")
    voice = page.locator("#voice input")
    expect(voice).to_have_value("en-us")
    voice.fill("de")
    voice.press("Enter")
    page.locator("#mute input").check()
    upload(page, story_video)
    page.locator("#start").click()
    expect_commentary(page, 2)
    assert page.evaluate("window.playingEvents") == 0  # muted: nothing was played
    page.locator("#mute input").uncheck()
    expect_speech_played(page)
    page.locator("#stop").click()
    wait_health(app.url, 0, timeout=10)
