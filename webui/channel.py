"""One WebSocket per browser tab carries everything live: picture, speech, chat, status, webcam frames.

Why a channel of our own: a tab used to hold four long-lived HTTP connections (Gradio's queue
stream and heartbeat, an MJPEG live view, the streaming audio's HLS fetches) and Chromium allows
six per host, so two tabs froze each other; Gradio's streaming audio also announced ever longer
HLS segments and drifted 8-15 s behind the picture. WebSockets do not count against the per-host
HTTP pool, so a tab now holds no long-lived HTTP connection at all, and the page plays speech with
Web Audio at the time the server's audio gate booked it (``webui/client.js``).

Pipeline threads fill a tab's outbox (``TabChannel``) and never block on the network; the
WebSocket task drains it. Pictures are latest-wins (a slow browser skips frames instead of
queueing them); chat, speech and notices are kept in order. Every message carries the run it
belongs to, so a page never plays or shows anything from a run it has left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PICTURE, AUDIO, WEBCAM = 1, 2, 3  # first byte of a binary message
STATUS_EVERY = 1.0  # seconds between status strips
RECONNECT_GRACE = 3.0  # a tab that dropped its channel this long is gone (closed or reloaded)
GRACE_POLL = 0.05  # how often the grace looks whether the app is stopping (a thread per wait would drain the pool)
CONNECT_WAIT = 15.0  # a tab whose page has not opened its channel this long after it was made never will
MAX_QUEUED = 4000  # messages kept for a tab that is not connected (about a minute of speech and chat)
_AUDIO_HEADER = struct.Struct("<BIddIx")  # kind, run, plays_at (epoch s), media time, rate; pad: PCM at an even offset
_PICTURE_HEADER = struct.Struct("<BId")  # kind, run, frame wall time (epoch s)


def audio_message(run: int, plays_at: float, media_time: float, sample_rate: int, samples: np.ndarray) -> bytes:
    """A speech chunk: int16 little-endian PCM after a header saying when (server epoch) it plays."""
    pcm = np.ascontiguousarray(samples, dtype="<i2").tobytes()
    return _AUDIO_HEADER.pack(AUDIO, run, plays_at, media_time, sample_rate) + pcm


def picture_message(run: int, wall_time: float, jpeg: bytes) -> bytes:
    return _PICTURE_HEADER.pack(PICTURE, run, wall_time) + jpeg


def parse_audio(message: bytes) -> tuple[int, float, float, int, np.ndarray]:
    """(run, plays_at, media_time, sample_rate, samples) of an audio message (tests and benches read it)."""
    kind, run, plays_at, media_time, rate = _AUDIO_HEADER.unpack_from(message)
    if kind != AUDIO:
        raise ValueError(f"not an audio message (kind {kind})")
    return run, plays_at, media_time, rate, np.frombuffer(message[_AUDIO_HEADER.size :], dtype="<i2")


def parse_webcam(message: bytes) -> tuple[int, bytes]:
    """(run, JPEG) of a webcam frame the page sent; ValueError for anything else."""
    if len(message) < 5 or message[0] != WEBCAM:
        raise ValueError("not a webcam frame")
    return struct.unpack_from("<I", message, 1)[0], message[5:]


class TabChannel:
    """A tab's outbox and its current run. Thread-safe: pipeline threads put, the socket task takes."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.token = secrets.token_urlsafe(24)
        self.run = 0
        self.connected = False
        self.made = time.monotonic()
        self.ever_connected = False  # an API client's Start makes a channel that no page ever opens
        self._messages: deque[str | bytes] = deque()
        self._picture: bytes | None = None
        self._pictures_sent: deque[float] = deque(maxlen=90)
        self._wake: Callable[[], None] = lambda: None
        self._lock = threading.Lock()

    # --- the pipeline's side ---
    def begin_run(self, mode: str, label: str) -> int:
        """A new run starts in this tab: the page forgets the old one (chat, picture, speech) at once."""
        with self._lock:
            self.run += 1
            self._picture = None
            self._messages = deque(m for m in self._messages if not isinstance(m, bytes))
            run = self.run
        self.send({"type": "run", "mode": mode, "label": label}, run)
        return run

    def send(self, message: dict[str, Any], run: int | None = None) -> None:
        """A JSON message for the page, stamped with its run (the current one by default)."""
        self._put(json.dumps({**message, "run": self.run if run is None else run}))

    def send_audio(self, run: int, plays_at: float, media_time: float, sample_rate: int, samples: np.ndarray) -> None:
        if run == self.run:
            self._put(audio_message(run, plays_at, media_time, sample_rate, samples))

    def offer_picture(self, run: int, wall_time: float, jpeg: bytes) -> None:
        """The newest picture replaces one the page has not been sent yet."""
        if run != self.run:
            return
        with self._lock:
            self._picture = picture_message(run, wall_time, jpeg)
        self._wake()

    def _put(self, message: str | bytes) -> None:
        with self._lock:
            self._messages.append(message)
            while len(self._messages) > MAX_QUEUED:
                self._messages.popleft()
        self._wake()

    # --- the socket's side ---
    def attach(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self.connected = self.ever_connected = True
            self._wake = wake
        wake()

    def detach(self) -> None:
        with self._lock:
            self.connected = False
            self._wake = lambda: None

    def unopened(self, now: float) -> bool:
        """No page has opened this channel in the ``CONNECT_WAIT`` since it was made: none will."""
        return not self.ever_connected and now - self.made > CONNECT_WAIT

    def take(self) -> list[str | bytes]:
        """Everything queued, in order, then the newest picture (if any)."""
        with self._lock:
            out: list[str | bytes] = list(self._messages)
            self._messages.clear()
            if self._picture is not None:
                out.append(self._picture)
                self._picture = None
                self._pictures_sent.append(time.monotonic())
        return out

    def picture_fps(self) -> float:
        """Pictures per second handed to the page's socket over the last few seconds."""
        with self._lock:
            sent = list(self._pictures_sent)
        if len(sent) < 2 or time.monotonic() - sent[-1] > 2:
            return 0.0
        return (len(sent) - 1) / max(sent[-1] - sent[0], 1e-6)


async def serve_tab(
    socket: Any,
    channel: TabChannel,
    status: Callable[[], str],
    on_webcam: Callable[[int, bytes], None],
    on_gone: Callable[[TabChannel], None],
    on_rule: Callable[[dict[str, Any]], None],
    leaving: threading.Event,
) -> None:
    """Run one tab's WebSocket (already accepted) until it closes; then, unless the page reconnects
    within ``RECONNECT_GRACE``, the tab is gone (``on_gone``: its pipeline is torn down). Once the app is
    ``leaving`` (SIGTERM) nobody waits for a reconnect: the server's close waits for this handler.

    ``socket`` is a Starlette WebSocket. The page may send ``{"type": "ping", "c": ms}`` (answered
    with the server clock, for its clock offset), binary webcam frames (``on_webcam``) and a watch rule's
    button, ``{"type": "rule", ...}`` (``on_rule``: the rules box's rows are the page's own HTML).
    """
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    replies: deque[str] = deque()
    channel.attach(lambda: loop.call_soon_threadsafe(wake.set))

    async def receive() -> None:
        while True:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes"):
                try:
                    run, jpeg = parse_webcam(message["bytes"])
                except ValueError:
                    continue
                await asyncio.to_thread(on_webcam, run, jpeg)
            elif message.get("text"):
                try:
                    asked = json.loads(message["text"])
                except ValueError:
                    continue
                if isinstance(asked, dict) and asked.get("type") == "ping":
                    replies.append(json.dumps({"type": "pong", "c": asked.get("c"), "s": time.time() * 1000}))
                    wake.set()
                elif isinstance(asked, dict) and asked.get("type") == "rule":
                    await asyncio.to_thread(on_rule, asked)

    receiver = asyncio.create_task(receive())
    last_status = 0.0
    try:
        while not receiver.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=STATUS_EVERY / 2)
            wake.clear()
            out: list[str | bytes] = [*replies, *channel.take()]
            replies.clear()
            if time.monotonic() - last_status >= STATUS_EVERY:
                last_status = time.monotonic()
                out.append(json.dumps({"type": "status", "html": status(), "run": channel.run}))
            for message in out:
                if isinstance(message, bytes):
                    await socket.send_bytes(message)
                else:
                    await socket.send_text(message)
    except Exception as exc:  # a closed socket shows up as one of several exceptions; the tab is gone
        log.debug("tab channel %s closed: %s", channel.key[:8], exc)
    finally:
        if receiver.done() and not receiver.cancelled() and receiver.exception() is not None:
            log.warning("tab channel %s: reading from the page failed: %r", channel.key[:8], receiver.exception())
        receiver.cancel()
        channel.detach()
    grace_ends = loop.time() + RECONNECT_GRACE
    while not leaving.is_set() and loop.time() < grace_ends:
        await asyncio.sleep(GRACE_POLL)
    if not channel.connected:
        await asyncio.to_thread(on_gone, channel)
