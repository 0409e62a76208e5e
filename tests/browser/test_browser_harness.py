"""Proves the real-browser harness (``tests/helpers/browser.py``) on a tiny stand-in Gradio app.

The stand-in streams a fake webcam (a Y4M clip with a moving square and a hard cut halfway) into
a ``.stream`` handler that counts frames and cuts; its outputs cover the components the real UI
uses (Textbox, Chatbot, Audio), so these tests also pin the Gradio 6 DOM the UI tests rely on.

What a real Chromium showed with Gradio 6.17.3 (more in ``tests/helpers/browser.py``):

* Webcam streaming needs two clicks inside ``#ELEM_ID``: the "Click to Access Webcam" button
  (``get_by_text("Click to Access Webcam")``), then Record
  (``button:has([title="start recording"])``; its aria-label says "capture photo" even when
  streaming). Frames flow only after Record; the button then shows ``[title="stop recording"]``.
* ``stream_every=0.2`` gives about 5 frames a second at the handler.
* Chromium loops the Y4M file, so the clip's cut recurs (and the loop point is a cut too).
* With ``ssr_mode=False`` the page makes no request beyond loopback. Gradio 6's built-in themes
  ship their fonts (``LocalFont``, served from ``/static/fonts``); only a ``gr.themes.GoogleFont``
  would reach out. System fonts in the theme skip even the local font download.
* Gradio keeps a connection open (heartbeat), so Playwright's ``networkidle`` never comes; wait
  for elements or values instead.
* A ``gr.Audio`` output with ``autoplay=True`` plays to the end in headless Chromium after a real
  click, under the desktop autoplay policy (``--autoplay-policy=document-user-activation-required``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.helpers.browser import (
    AppServer,
    audio_element,
    chatbot_messages,
    chromium_available,
    launch_browser,
    make_fake_camera_clip,
    offline_guard,
    process_thread_count,
    screenshot,
    start_webcam_stream,
    stop_webcam_stream,
    textbox,
)

STAND_IN = '''
"""Stand-in app: counts webcam frames and cuts (big jumps in mean colour)."""
import argparse

import gradio as gr
import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--host", default="127.0.0.1")
args = parser.parse_args()
state = {"frames": 0, "cuts": 0, "last": None, "size": ""}


def on_frame(frame):
    if frame is None:
        return gr.skip(), gr.skip()
    mean = frame.reshape(-1, frame.shape[-1])[:, :3].mean(axis=0)
    if state["last"] is not None and np.abs(mean - state["last"]).max() > 40:
        state["cuts"] += 1
    state["last"] = mean
    state["frames"] += 1
    state["size"] = f"{frame.shape[1]}x{frame.shape[0]}"
    text = f"frames: {state['frames']} cuts: {state['cuts']} size: {state['size']}"
    chat = [{"role": "user", "content": "what do you see?"}, {"role": "assistant", "content": f"**seen** {text}"}]
    return text, chat


def beep():
    t = np.arange(8000) / 16000
    return 16000, (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)


theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])
with gr.Blocks(title="stand-in") as demo:
    cam = gr.Image(sources=["webcam"], streaming=True, elem_id="cam")
    count = gr.Textbox(label="count", elem_id="count")
    chat = gr.Chatbot(elem_id="chat")
    voice = gr.Audio(elem_id="voice", autoplay=True)
    gr.Button("Beep", elem_id="beep").click(beep, None, voice)
    cam.stream(on_frame, cam, [count, chat], stream_every=0.2)
demo.launch(server_name=args.host, server_port=args.port, ssr_mode=False, theme=theme, quiet=True)
'''


@pytest.fixture
def stand_in(tmp_path: Path) -> list[str]:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    return [sys.executable, str(script)]


@pytest.mark.browser
def test_webcam_stream_reaches_handler_offline(stand_in: list[str], tmp_path: Path) -> None:
    if not chromium_available():
        pytest.skip("/usr/bin/chromium is missing (install the Debian package 'chromium': scripts/setup.sh --dev)")
    from playwright.sync_api import expect, sync_playwright

    # 1 s per scene: one pass holds one cut, so three cuts (the loop point is one) prove Chromium loops.
    clip = make_fake_camera_clip(tmp_path / "camera.y4m", seconds=2)
    server = AppServer(cmd=stand_in)
    with server as url, sync_playwright() as pw:
        assert process_thread_count(server.pid) >= 1
        browser = launch_browser(pw, fake_camera=clip)
        try:
            page = browser.new_page()
            with offline_guard(page) as outside:
                page.goto(url)
                start_webcam_stream(page, "cam")
                count = textbox(page, "count")
                expect(count).to_have_value(re.compile(r"frames: ([5-9]|\d\d+) "), timeout=20_000)
                expect(count).to_have_value(re.compile(r"size: 640x360"))
                expect(count).to_have_value(re.compile(r"cuts: ([3-9]|\d\d+) "), timeout=20_000)

                bot = chatbot_messages(page, "chat", "bot")
                expect(bot).to_have_count(1)
                expect(bot).to_contain_text(re.compile(r"seen frames: \d+"))
                assert "**" not in bot.inner_text()  # Markdown is rendered
                expect(chatbot_messages(page, "chat", "user")).to_have_text("what do you see?")

                stop_webcam_stream(page, "cam")
                page.locator("#beep").click()
                audio = audio_element(page, "voice")
                expect(audio).to_have_attribute("src", re.compile(r"^http://127\.0\.0\.1:\d+/gradio_api/file="))
                expect(audio).to_have_js_property("ended", True, timeout=10_000)  # autoplay played it
                screenshot(page, tmp_path, "stand_in")
            assert outside == [], f"the page reached beyond loopback: {outside}"

            # The guard itself sees an outside request (TEST-NET-2 address: never answered here).
            probe = browser.new_page()
            with offline_guard(probe) as seen:
                probe.set_content('<img src="http://198.51.100.7/x.png">')
            assert seen == ["http://198.51.100.7/x.png"]
        finally:
            browser.close()
    assert (tmp_path / "stand_in.png").stat().st_size > 10_000
    assert server.proc is not None and server.proc.returncode is not None


def test_app_server_reports_a_crash(tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text("import sys\nprint('no such model: tiny', file=sys.stderr)\nsys.exit(3)\n")
    server = AppServer(cmd=[sys.executable, str(script)])
    with pytest.raises(RuntimeError, match=r"exited with 3 before serving:\nno such model: tiny"), server:
        pass
    assert server.proc is not None and server.proc.returncode == 3


def test_app_server_times_out_and_stops_the_process(tmp_path: Path) -> None:
    script = tmp_path / "silent.py"
    script.write_text("import sys, time\nprint('starting', file=sys.stderr, flush=True)\ntime.sleep(60)\n")
    server = AppServer(cmd=[sys.executable, str(script)], start_timeout=1.0)
    with pytest.raises(TimeoutError, match=r"did not serve .* within 1 s .*\nstarting"), server:
        pass
    assert server.proc is not None and server.proc.returncode is not None


def test_app_server_environment_is_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONLOOKER_BACKEND", "leaked")
    script = tmp_path / "env.py"
    script.write_text(
        "import os, sys\n"
        "print(sorted(k for k in os.environ if k.startswith('ONLOOKER_')),"
        " os.environ['GRADIO_ANALYTICS_ENABLED'], os.environ['HF_HUB_OFFLINE'], sys.argv[1:], file=sys.stderr)\n"
        "sys.exit(0)\n"
    )
    server = AppServer(args=["--extra", "1"], cmd=[sys.executable, str(script)])
    with pytest.raises(RuntimeError) as info, server:
        pass
    assert f"[] False 1 ['--port', '{server.port}', '--host', '127.0.0.1', '--extra', '1']" in str(info.value)
