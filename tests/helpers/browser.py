"""Real-browser test harness: a fake webcam clip, headless Chromium, and the app as a subprocess.

Why each piece exists:

* The UI is only honest when a real browser drives it (Gradio's webcam streaming is JavaScript:
  ``getUserMedia``, a canvas grab every ``stream_every`` seconds, an upload per frame), so the
  tests use the system Chromium (``/usr/bin/chromium``, Debian package ``chromium``) through
  Playwright's Python package. Playwright's own browser download is never used.
* Chromium can play a file as its camera (``--use-file-for-fake-video-capture``, together with
  ``--use-fake-device-for-media-stream``) and loops it. Y4M in 4:2:0 (``C420jpeg`` or
  ``C420mpeg2`` headers) and ``.mjpeg`` files work; a 4:4:4 Y4M silently gives no camera at all
  (the Record button never appears).
* This machine has no internet; Chromium's background services (component updater, sync, QUIC
  probes) would otherwise try to connect out, so they are switched off.
* The app runs as a real subprocess on a free loopback port, exactly as a user starts it, so the
  tests cover flag parsing, start-up and shutdown too; the server (and any child process it
  started) is always stopped and checked gone on exit.

Gradio 6 (6.17.3) DOM, as seen in a real Chromium (proved by ``tests/browser/test_browser_harness.py``);
give components an ``elem_id`` and scope every selector to ``#ELEM_ID``:

* Webcam streaming, ``gr.Image(sources=["webcam"], streaming=True)``: two clicks. First the
  "Click to Access Webcam" button (``get_by_text("Click to Access Webcam")``; the permission
  prompt is auto-accepted by ``--use-fake-ui-for-media-stream``). The live picture then shows with
  a "Record" button: ``button:has([title="start recording"])`` (its aria-label is "capture photo",
  even when streaming). Frames reach ``.stream`` only after Record; the button then reads "Stop"
  and holds ``[title="stop recording"]``. See :func:`start_webcam_stream`.
* ``gr.Textbox``: the value is in its ``textarea`` (``input_value()``/``to_have_value``), not in
  the text content.
* ``gr.Chatbot``: messages are ``[data-testid="bot"]`` and ``[data-testid="user"]``; their
  ``inner_text()`` is the rendered Markdown (``**x**`` reads "x"), and their ``aria-label`` is
  "bot's message: " plus the raw Markdown.
* ``gr.Audio`` output: with the default waveform the playing ``<audio>`` is WaveSurfer's, in an
  open shadow root (``#ELEM_ID audio[src]``; Playwright's CSS pierces it, ``querySelectorAll``
  does not); its ``src`` is ``http://HOST:PORT/gradio_api/file=...``, as is the download link
  ``a[data-testid="download-link"]``. The visible ``audio.standard-player`` stays without ``src``,
  even with ``WaveformOptions(show_recording_waveform=False)``. ``autoplay=True`` plays it to the
  end (``ended`` becomes true) after a real click, under the desktop autoplay policy
  (``--autoplay-policy=document-user-activation-required``); a script's ``click()`` is no user
  activation, so the browser then blocks it (``play()`` rejects with ``NotAllowedError``).
* Gradio keeps a connection open, so Playwright's ``networkidle`` never comes: wait on elements.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psutil
import pytest

from tests.helpers.media import Segment, write_video

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page, Playwright, Request, WebSocket

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")

# Flags every test browser gets. The background-networking ones keep Chromium's own services from
# dialling out (this machine's network is closed: such connections are refused).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    # What desktop browsers do: sound may autoplay only after the user has interacted with the page.
    "--autoplay-policy=document-user-activation-required",
]


def chromium_available() -> bool:
    """True when the system Chromium is installed (tests skip otherwise)."""
    return CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)


def browser_test_marks() -> list[pytest.MarkDecorator]:
    """A browser test module's ``pytestmark``: marked ``browser``, skipped with the way out without Chromium."""
    return [
        pytest.mark.browser,
        pytest.mark.skipif(
            not chromium_available(),
            reason="/usr/bin/chromium is missing (install the Debian package 'chromium': scripts/setup.sh --dev)",
        ),
    ]


def make_fake_camera_clip(path: Path, seconds: float = 6, size: tuple[int, int] = (640, 360), fps: int = 15) -> Path:
    """Write a Y4M clip for Chromium's fake webcam: a square moving across, and a hard cut halfway.

    Known content (same drawing as ``tests/helpers/media.py``) lets tests reason about what the camera
    showed; Chromium loops the file, so the cut recurs every ``seconds``. Y4M is raw, so the file
    is big (640x360 at 15 fps: about 5 MB a second); keep clips short.
    """
    if path.suffix != ".y4m":
        raise ValueError(f"this writes a Y4M clip; name it *.y4m, not {path.name!r}")
    width, height = size
    half = seconds / 2
    segments = [Segment(half, 0, moving=True), Segment(seconds - half, 1, moving=True)]
    # Plain yuv420p Y4M: its "C420jpeg" header is one Chromium accepts (4:4:4 silently gives no camera).
    return write_video(path, segments, fps=fps, width=width, height=height)


def launch_browser(playwright: Playwright, fake_camera: Path | None = None) -> Browser:
    """Start the system Chromium headless, offline-quiet, with a fake camera that needs no prompt.

    Without ``fake_camera`` the camera shows Chromium's built-in test pattern.
    """
    if not chromium_available():
        raise RuntimeError(f"{CHROMIUM} is missing; install the Debian package 'chromium' (scripts/setup.sh --dev)")
    args = list(CHROMIUM_ARGS)
    if fake_camera is not None:
        if not fake_camera.is_file():
            raise FileNotFoundError(fake_camera)
        args.append(f"--use-file-for-fake-video-capture={fake_camera.resolve()}")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)


def free_port() -> int:
    """A TCP port that was free a moment ago (bind to port 0 and let the OS choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_env() -> dict[str, str]:
    """The parent's environment minus any ONLOOKER_* settings, plus offline, quiet Gradio."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONLOOKER_")}
    env.update(GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    return env


class AppServer:
    """Run the app (or any script taking ``--port N --host H``) as a subprocess on a free port.

    Use as a context manager; it yields the base URL once ``GET /`` answers 200 (and, for the app, once it has
    printed its ``· ready:`` line: its own routes are added after Gradio starts serving), and on exit
    stops the process (terminate, then kill) and asserts it is gone. The process's stdout and
    stderr are captured; read them with :meth:`output` (also after it stopped). One use only.

    ``cmd`` is the command before the port and host flags; it defaults to ``python app.py``.
    ``args`` come after them; ``env`` is added to ``app_env()``.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        cmd: Sequence[str] | None = None,
        start_timeout: float = 90.0,
        cwd: Path = ROOT,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.base_cmd = list(cmd) if cmd is not None else [sys.executable, str(ROOT / "app.py")]
        self.ready_line = "· ready: " if cmd is None else None
        self.args = [str(a) for a in args]
        self.start_timeout = start_timeout
        self.cwd = cwd
        self.env = app_env() | (env or {})
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        # Files, not pipes: a pipe nobody reads fills up and blocks the server. Closed (after a
        # last read) in stop().
        self._logs = [tempfile.TemporaryFile() for _ in range(2)]  # noqa: SIM115
        self._final: tuple[str, str] | None = None

    @property
    def command(self) -> list[str]:
        return [*self.base_cmd, "--port", str(self.port), "--host", "127.0.0.1", *self.args]

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the server is not running"
        return self.proc.pid

    def output(self) -> tuple[str, str]:
        """(stdout, stderr) the process has written so far (all of it, once stopped)."""
        if self._final is not None:
            return self._final
        texts = []
        for f in self._logs:
            f.seek(0)
            texts.append(f.read().decode(errors="replace"))
        return texts[0], texts[1]

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdout=self._logs[0], stderr=self._logs[1]
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        last_error = "no answer yet"
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                code = self.proc.poll()
                if code is not None:
                    raise RuntimeError(f"{self.command} exited with {code} before serving:\n{self.output()[1][-4000:]}")
                try:
                    response = client.get(self.url + "/")
                    if response.status_code == 200 and (self.ready_line is None or self.ready_line in self.output()[1]):
                        return
                    last_error = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    last_error = repr(exc)
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{self.command} did not serve {self.url}/ within {self.start_timeout:.0f} s "
                        f"({last_error}):\n{self.output()[1][-4000:]}"
                    )
                time.sleep(0.2)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process (kill it if it lingers) and check that it and its children are gone.

        A child left behind (an FFmpeg reader, say) is killed too, and then fails the check: the
        app must clean up after itself.
        """
        proc = self.proc
        if proc is None or self._final is not None:
            return
        children: list[psutil.Process] = []
        if proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(proc.pid).children(recursive=True)
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        self._final = self.output()
        for f in self._logs:
            f.close()
        assert proc.poll() is not None and not psutil.pid_exists(proc.pid), f"server {proc.pid} is still running"
        _, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
        assert not alive, f"server {proc.pid} left processes running: {[c.pid for c in alive]}"


def process_thread_count(pid: int) -> int:
    """How many OS threads a process has (leak checks: start/stop sessions, compare counts)."""
    return psutil.Process(pid).num_threads()


def screenshot(page: Page, directory: Path, name: str = "page") -> Path:
    """Save a full-page PNG as ``directory/name.png`` (created if needed) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def start_webcam_stream(page: Page, elem_id: str, timeout_ms: float = 15_000) -> None:
    """Start a streaming ``gr.Image(sources=["webcam"])``: grant the camera, then press Record.

    Two clicks, as a user does: "Click to Access Webcam" opens the camera (the permission prompt
    is auto-accepted by ``--use-fake-ui-for-media-stream``), then the round Record button starts
    sending frames. Returns once the button has turned into Stop.
    """
    from playwright.sync_api import expect

    root = page.locator(f"#{elem_id}")
    root.get_by_text("Click to Access Webcam").click(timeout=timeout_ms)
    root.locator('button:has([title="start recording"])').click(timeout=timeout_ms)
    expect(root.locator('[title="stop recording"]')).to_be_visible(timeout=timeout_ms)


def stop_webcam_stream(page: Page, elem_id: str, timeout_ms: float = 15_000) -> None:
    """Press Stop on a streaming webcam (Gradio then sends no more frames)."""
    from playwright.sync_api import expect

    root = page.locator(f"#{elem_id}")
    root.locator('button:has([title="stop recording"])').click(timeout=timeout_ms)
    expect(root.locator('[title="start recording"]')).to_be_visible(timeout=timeout_ms)


def textbox(page: Page, elem_id: str) -> Locator:
    """A ``gr.Textbox``'s field; its text is the value (``input_value()``/``to_have_value``)."""
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def chatbot_messages(page: Page, elem_id: str, role: str = "bot") -> Locator:
    """A ``gr.Chatbot``'s messages of one role ("bot" or "user"); ``inner_text()`` is the text."""
    return page.locator(f'#{elem_id} [data-testid="{role}"]')


def audio_element(page: Page, elem_id: str) -> Locator:
    """The ``<audio>`` that plays a ``gr.Audio``'s value (``src`` is its ``/gradio_api/file=`` URL).

    With the default waveform it is WaveSurfer's element in a shadow root (Playwright's CSS
    pierces it); the visible ``audio.standard-player`` stays hidden and without ``src``.
    """
    return page.locator(f"#{elem_id} audio[src]").first


@contextlib.contextmanager
def offline_guard(page: Page) -> Iterator[list[str]]:
    """Record each URL the page requests (or opens a websocket to) on a host other than loopback.

    Yields the list (each URL once, failed or not). Proves the UI works without the internet:
    no CDN scripts, web fonts or analytics; on this closed network such requests fail.
    """
    outside: list[str] = []

    def check(request: Request | WebSocket) -> None:
        url = request.url
        host = httpx.URL(url).host if url.startswith(("http:", "https:", "ws:", "wss:")) else ""
        if host and host not in ("127.0.0.1", "localhost", "::1") and url not in outside:
            outside.append(url)

    page.on("request", check)
    page.on("requestfailed", check)
    page.on("websocket", check)
    try:
        yield outside
    finally:
        page.remove_listener("request", check)
        page.remove_listener("requestfailed", check)
        page.remove_listener("websocket", check)
