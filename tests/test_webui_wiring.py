"""The Blocks wiring end to end over HTTP: the real app as a subprocess, driven by gradio_client
(click endpoints) and httpx (the MJPEG live view and the health route)."""

from __future__ import annotations

import httpx
import pytest
from browser import AppServer
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError


@pytest.fixture(scope="module")
def app_url():
    with AppServer(args=["--tts", "none", "--backend", "opencv"]) as url:
        yield url


def health(url: str) -> dict:
    return httpx.get(f"{url}/onlooker/health", timeout=10).json()


def test_start_streams_commentary_then_stop_tears_down(app_url, story_video):
    client = Client(app_url, verbose=False)
    live, status, chat = client.predict(
        "Upload", handle_file(str(story_video)), "", "sports", "sniper", api_name="/start"
    )
    assert 'src="onlooker/live/' in live and "status-strip" in status and chat == []
    token = live.split("onlooker/live/")[1].split(".mjpg")[0]
    assert health(app_url)["sessions"] == 1

    with httpx.stream("GET", f"{app_url}/onlooker/live/{token}.mjpg", timeout=20) as response:
        assert response.headers["content-type"].startswith("multipart/x-mixed-replace")
        head = b""
        for chunk in response.iter_bytes():
            head += chunk
            if head.count(b"\xff\xd9") >= 2:
                break
    assert head.startswith(b"--onlookerframe") and b"Content-Type: image/jpeg" in head

    job = client.submit(api_name="/commentary")
    messages = None
    for messages in job:
        texts = [part["text"] for m in messages if m["role"] == "assistant" for part in m["content"]]
        if len(texts) >= 2:
            break
    assert messages and any(t.startswith("`00:") for t in texts)

    client.predict(api_name="/stop")
    state = health(app_url)
    assert state["sessions"] == 0 and state["threads"] == []
    assert httpx.get(f"{app_url}/onlooker/live/{token}.mjpg", timeout=10).status_code == 404


def test_bad_input_is_reported_and_nothing_starts(app_url):
    client = Client(app_url, verbose=False)
    with pytest.raises(AppError, match="unsupported scheme"):
        client.predict("URL", None, "gopher://cam/1", "narrator", "balanced", api_name="/start")
    with pytest.raises(AppError, match="choose a video file"):
        client.predict("Upload", None, "", "narrator", "balanced", api_name="/start")
    assert health(app_url)["sessions"] == 0


def test_instruction_needs_a_session_and_reaches_it(app_url, story_video):
    client = Client(app_url, verbose=False)
    assert client.predict("look left", api_name="/instruct") == "look left"  # kept: nothing running
    client.predict("Upload", handle_file(str(story_video)), "", "narrator", "balanced", api_name="/start")
    assert client.predict("look left", api_name="/instruct") == ""
    client.predict("security", api_name="/change_profile")
    client.predict("owl", api_name="/change_preset")
    client.predict(api_name="/stop")
    assert health(app_url)["sessions"] == 0


def test_auto_backend_falls_back_with_a_banner_and_exposed_without_login_warns():
    server = AppServer(args=["--tts", "none", "--host", "0.0.0.0"])
    with server as url:
        config = httpx.get(f"{url}/config", timeout=10).text
    assert "Offline narrator" in config and "--model" in config
    _, stderr = server.output()
    assert "WARNING: the app is reachable by others" in stderr and "--auth" in stderr
