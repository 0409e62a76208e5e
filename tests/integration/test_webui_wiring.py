"""The Blocks wiring end to end over the wire: the real app as a subprocess, driven by gradio_client
(the click endpoints, in one Gradio session) and a real WebSocket client on the tab's channel."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from gradio_client import Client, handle_file
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.helpers.browser import AppServer
from webui.channel import parse_audio


@pytest.fixture(scope="module")
def app_url():
    with AppServer(args=["--tts", "espeak", "--backend", "opencv"]) as url:
        yield url


def health(url: str) -> dict:
    return httpx.get(f"{url}/onlooker/health", timeout=10).json()


def open_tab(url: str, **headers: str) -> tuple[Client, ClientConnection]:
    """A Gradio session and its tab channel, as the page opens them when it loads."""
    client = Client(url, verbose=False, headers=headers or None)
    tab = client.predict(api_name="/open_tab")
    token = re.search(r'data-token="([^"]+)"', tab).group(1)
    return client, connect(f"{url.replace('http', 'ws', 1)}/onlooker/tab/{token}", additional_headers=headers)


def read_until(socket: ClientConnection, done, timeout: float = 30.0) -> list[dict | bytes]:
    messages: list[dict | bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = socket.recv(timeout=max(deadline - time.monotonic(), 0.01))
        message = raw if isinstance(raw, bytes) else json.loads(raw)
        messages.append(message)
        if done(message):
            return messages
    raise AssertionError(f"never came; got {[m if isinstance(m, dict) else m[:1] for m in messages]}")


def test_one_channel_carries_picture_speech_chat_and_status_then_stop_tears_down(app_url, story_video):
    client, socket = open_tab(app_url)
    with socket:
        client.predict("Upload", handle_file(str(story_video)), "", "sports", "sniper", api_name="/start")
        assert health(app_url)["sessions"] == 1
        kinds: set[str] = set()

        def everything(message: dict | bytes) -> bool:
            kinds.add({1: "picture", 2: "audio"}[message[0]] if isinstance(message, bytes) else message["type"])
            return {"run", "picture", "audio", "final", "status"} <= kinds

        messages = read_until(socket, everything, timeout=60)
        audio = [parse_audio(m) for m in messages if isinstance(m, bytes) and m[0] == 2]
        assert audio[0][0] == 1 and audio[0][3] == 24000 and len(audio[0][4]) > 0
        assert audio[0][1] > time.time() - 5  # stamped with when it plays, on the server's clock
        status = next(m for m in messages if isinstance(m, dict) and m["type"] == "status")
        assert "status-strip" in status["html"]
        client.predict(api_name="/stop")
        read_until(socket, lambda m: isinstance(m, dict) and m["type"] == "stopped")
        state = health(app_url)
        assert state["sessions"] == 0 and state["threads"] == []
    # The socket closed: the tab is gone after the reconnect grace.
    deadline = time.monotonic() + 15
    while health(app_url)["tabs"] and time.monotonic() < deadline:
        time.sleep(0.2)  # polling the server's own count, not synchronising with it
    assert health(app_url)["tabs"] == 0


def test_bad_input_is_reported_once_on_the_channel_and_nothing_starts(app_url):
    client, socket = open_tab(app_url)
    with socket:
        client.predict("URL", None, "gopher://cam/1", "narrator", "balanced", api_name="/start")
        failed = read_until(socket, lambda m: isinstance(m, dict) and m["type"] == "failed")[-1]
        assert "unsupported scheme" in failed["text"]
        client.predict("Upload", None, "", "narrator", "balanced", api_name="/start")
        failed = read_until(socket, lambda m: isinstance(m, dict) and m["type"] == "failed")[-1]
        assert "choose a video file" in failed["text"] and failed["run"] == 2
        assert health(app_url)["sessions"] == 0


def test_an_unknown_channel_is_refused(app_url):
    with pytest.raises(InvalidStatus), connect(f"{app_url.replace('http', 'ws', 1)}/onlooker/tab/nope"):
        pass


def test_instruction_needs_a_session_and_reaches_it(app_url, story_video):
    client, socket = open_tab(app_url)
    with socket:
        assert client.predict("look left", api_name="/instruct") == "look left"  # kept: nothing running
        client.predict("Upload", handle_file(str(story_video)), "", "narrator", "balanced", api_name="/start")
        assert client.predict("look left", api_name="/instruct") == ""
        client.predict("security", api_name="/change_profile")
        client.predict("owl", api_name="/change_preset")
        client.predict(api_name="/stop")
    assert health(app_url)["sessions"] == 0


def test_the_channel_follows_the_login():
    with AppServer(args=["--tts", "none", "--backend", "opencv", "--auth", "me:secret"]) as url:
        login = httpx.post(f"{url}/login", data={"username": "me", "password": "secret"}, timeout=10)
        assert login.status_code == 200, login.text
        cookie = "; ".join(f"{k}={v}" for k, v in login.cookies.items())
        client, socket = open_tab(url, Cookie=cookie)
        with socket:
            socket.send(json.dumps({"type": "ping", "c": 1}))
            assert read_until(socket, lambda m: isinstance(m, dict) and m["type"] == "pong")
        token = re.search(r'data-token="([^"]+)"', client.predict(api_name="/open_tab")).group(1)
        with pytest.raises(InvalidStatus), connect(f"{url.replace('http', 'ws', 1)}/onlooker/tab/{token}"):
            pass  # the right token, but no login cookie


def test_auto_backend_falls_back_with_a_banner_and_exposed_without_login_warns():
    server = AppServer(args=["--tts", "none", "--host", "0.0.0.0"], env={"no_proxy": "10.0.0.5"})
    with server as url:
        config = httpx.get(f"{url}/config", timeout=10).text
    assert "offline narrator" in config and "--model" in config
    _, stderr = server.output()
    assert "WARNING: the app is reachable by others" in stderr and "--auth" in stderr
    assert "Onlooker is starting" in stderr and "· ready: http://" in stderr
    assert "share=True" not in stderr and "StarletteDeprecationWarning" not in stderr
    assert "no_proxy (10.0.0.5) is ignored on a shared app" in stderr  # FFmpeg would go past the URL guard's proxy
