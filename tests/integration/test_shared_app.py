"""A shared app with a login, as others would meet it: the real app as a subprocess listening on every address
(``--host 0.0.0.0``, so it counts as shared) with two logins and ``--max-sessions 3``, reached over loopback.

Every route answers by the login (``webui/gate.py``): the health check says only "ok" without it, the tab's
channel (which carries the live picture) is refused, and Gradio's routes that used to answer anyone no longer
do. Starts past the caps are refused in the page, and a session started through the API with no page is reaped
with its threads. The route table below is the one in ``docs/inputs.md``'s security section."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.helpers.browser import AppServer
from tests.helpers.media import Segment, write_video
from webui.channel import CONNECT_WAIT, PICTURE

LOGINS = {"ann": "pw-ann", "bob": "pw-bob"}
MAX_SESSIONS = 3  # with two logins, one login may run 2


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    auth = ",".join(f"{user}:{password}" for user, password in LOGINS.items())
    args = ["--tts", "none", "--backend", "opencv", "--no-record", "--host", "0.0.0.0", "--auth", auth]
    with AppServer(args=[*args, "--max-sessions", str(MAX_SESSIONS)]) as url:
        yield url


@pytest.fixture(scope="module")
def cookies(app_url: str) -> dict[str, str]:
    """Each login's cookie header, as Gradio's /login sets it."""
    out = {}
    for user, password in LOGINS.items():
        answer = httpx.post(f"{app_url}/login", data={"username": user, "password": password}, timeout=10)
        assert answer.status_code == 200, answer.text
        out[user] = "; ".join(f"{k}={v}" for k, v in answer.cookies.items())
    return out


def health(url: str, cookie: str) -> dict:
    answer = httpx.get(f"{url}/onlooker/health", headers={"Cookie": cookie}, timeout=10)
    assert answer.status_code == 200
    return answer.json()


def ws_url(url: str, token: str) -> str:
    return f"{url.replace('http', 'ws', 1)}/onlooker/tab/{token}"


def open_tab(url: str, cookie: str) -> tuple[Client, ClientConnection]:
    """A Gradio session and its tab channel, as a logged-in page opens them when it loads."""
    client = Client(url, verbose=False, headers={"Cookie": cookie})
    token = re.search(r'data-token="([^"]+)"', client.predict(api_name="/open_tab")).group(1)
    return client, connect(ws_url(url, token), additional_headers={"Cookie": cookie})


def start(client: Client, video: Path) -> None:
    client.predict("Upload", handle_file(str(video)), "", "narrator", "balanced", api_name="/start")


def read_until(socket: ClientConnection, done: Callable[[dict | bytes], bool], timeout: float = 30.0) -> dict | bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = socket.recv(timeout=max(deadline - time.monotonic(), 0.01))
        message = raw if isinstance(raw, bytes) else json.loads(raw)
        if done(message):
            return message
    raise AssertionError("the message never came")


def is_type(kind: str) -> Callable[[dict | bytes], bool]:
    return lambda m: isinstance(m, dict) and m["type"] == kind


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)  # polling the server's own count, not synchronising with it


def test_health_says_only_ok_without_the_login_and_everything_with_it(app_url, cookies):
    anonymous = httpx.get(f"{app_url}/onlooker/health", timeout=10)
    assert anonymous.status_code == 200 and anonymous.text == "ok"
    details = health(app_url, cookies["ann"])
    assert details["sessions"] == 0 and details["threads"] == [] and "OpenCV" in details["backend"]


def test_the_tab_channel_needs_the_login(app_url, cookies):
    client, socket = open_tab(app_url, cookies["ann"])
    with socket:
        socket.send(json.dumps({"type": "ping", "c": 1}))
        assert read_until(socket, is_type("pong"))
    token = re.search(r'data-token="([^"]+)"', client.predict(api_name="/open_tab")).group(1)
    with pytest.raises(InvalidStatus) as refused, connect(ws_url(app_url, token)):
        pass  # the right token, but no login cookie
    assert refused.value.response.status_code == 403


# (method, path, without the login, with it): what each route answers now; docs/inputs.md has the same table.
ROUTES = [
    ("GET", "/", 200, 200),  # the login page, then the app
    ("GET", "/theme.css", 200, 200),  # the login page's own style
    ("GET", "/gradio_api/startup-events", 200, 200),  # Gradio's launch() calls it without a cookie
    ("GET", "/openapi.json", 401, 404),  # FastAPI's schema of every route: gone
    ("GET", "/monitoring/summary", 401, 200),  # every visitor's calls, counted
    ("GET", "/monitoring", 401, 403),  # monitoring is off
    ("GET", "/gradio_api/heartbeat/some-session", 401, 200),
    ("POST", "/gradio_api/cancel", 401, 200),
    ("GET", "/gradio_api/deep_link?session_hash=some-session", 401, 200),
    ("POST", "/gradio_api/reset", 401, 200),
    ("GET", "/gradio_api/upload_progress?upload_id=x", 401, None),  # logged in, it waits 3 s for the upload
    ("GET", "/gradio_api/stream/some-session/0/1/playlist.m3u8", 401, 404),
    ("GET", "/gradio_api/user", 401, 200),
    ("GET", "/gradio_api/app_id", 401, 200),
    ("GET", "/config", 401, 200),  # already behind Gradio's login
    ("GET", "/gradio_api/info", 401, 200),
    ("GET", "/gradio_api/openapi.json", 401, 200),
    ("GET", "/gradio_api/file=/etc/hostname", 401, 403),
]


@pytest.mark.parametrize(("method", "path", "anonymous", "logged_in"), ROUTES, ids=[r[1] for r in ROUTES])
def test_gradio_routes_answer_by_the_login(app_url, cookies, method, path, anonymous, logged_in):
    body = {"session_hash": "some-session", "fn_index": 0, "event_id": "x"} if method == "POST" else None
    for cookie, expected in (("", anonymous), (cookies["ann"], logged_in)):
        if expected is None:
            continue
        # Streamed: the heartbeat answers for as long as the client listens; the status is what counts.
        with httpx.stream(method, f"{app_url}{path}", json=body, headers={"Cookie": cookie}, timeout=10) as answer:
            assert answer.status_code == expected, (path, bool(cookie), answer.status_code)
            if expected == 401:
                assert json.loads(answer.read())["detail"]["error"] == "Not authenticated"


def test_starts_past_the_caps_are_refused_in_the_page(app_url, cookies, story_video):
    with contextlib.ExitStack() as stack:
        tabs = []
        for user in ("ann", "ann", "ann", "bob", "bob"):
            client, socket = open_tab(app_url, cookies[user])
            tabs.append((client, stack.enter_context(socket)))
        running = []

        def starts(n: int) -> None:
            client, socket = tabs[n]
            start(client, story_video)
            assert read_until(socket, lambda m: isinstance(m, bytes) and m[0] == PICTURE)  # the live picture
            running.append(n)

        def refused(n: int) -> str:
            client, socket = tabs[n]
            start(client, story_video)
            return read_until(socket, is_type("failed"))["text"]

        def stops(n: int) -> None:
            client, socket = tabs[n]
            client.predict(api_name="/stop")
            read_until(socket, is_type("stopped"))  # read past its pictures: the socket then closes at once
            running.remove(n)

        try:
            starts(0)
            starts(1)
            said = refused(2)
            assert said.startswith("Your login already runs 2 sessions") and "--max-sessions 3" in said
            starts(3)  # bob's first: the app's third
            said = refused(4)
            assert said == (
                "This app is already running 3 sessions, its limit (--max-sessions 3): stop one, or try again later."
            )
            assert health(app_url, cookies["bob"])["sessions"] == MAX_SESSIONS
            stops(0)  # a place comes free: ann's third tab may start now
            starts(2)
        finally:
            for n in list(running):
                stops(n)
    state = health(app_url, cookies["ann"])
    assert state["sessions"] == 0 and state["threads"] == []


@pytest.fixture(scope="module")
def long_video(media_dir: Path) -> Path:
    """Longer than the wait for a page: the session still plays when it is reaped."""
    return write_video(media_dir / "long-still.mp4", [Segment(CONNECT_WAIT + 20, 0)])


def test_a_session_started_through_the_api_without_a_page_is_reaped_with_its_threads(app_url, cookies, long_video):
    client = Client(app_url, verbose=False, headers={"Cookie": cookies["bob"]})
    start(client, long_video)  # no /open_tab, no channel: nothing will ever watch it
    begun = time.monotonic()
    seen: list[dict] = []

    def gone() -> bool:
        seen.append(health(app_url, cookies["bob"]))
        return seen[-1]["sessions"] == 0 and seen[-1]["threads"] == [] and seen[-1]["tabs"] == 0

    wait_for(gone, CONNECT_WAIT + 15, "the session without a page was never reaped")
    assert time.monotonic() - begun > CONNECT_WAIT - 2  # it had its chance to connect
    last_running = [state for state in seen if state["sessions"] == 1][-1]
    assert any(name.startswith("source-") for name in last_running["threads"])  # still playing until reaped
