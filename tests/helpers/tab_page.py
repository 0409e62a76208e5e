"""A tab's page as the tests see it: the channel's messages (attached as the WebSocket would be), decoded."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from webui.sessions import SessionManager


class TabPage:
    """What a tab's page receives over its channel (attached as the socket would be), decoded."""

    def __init__(self, manager: SessionManager, key: str) -> None:
        self.channel = manager.tab(key)
        self.messages: list[dict | bytes] = []
        self._wake = threading.Event()
        self.channel.attach(self._wake.set)

    def until(self, done: Callable[[dict | bytes], bool], timeout: float = 30.0) -> list[dict | bytes]:
        """Read until ``done(message)`` is true for a message (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._wake.wait(0.5)
            self._wake.clear()
            for raw in self.channel.take():
                message = raw if isinstance(raw, bytes) else json.loads(raw)
                self.messages.append(message)
                if done(message):
                    return self.messages
        raise AssertionError(f"never came; got {[m if isinstance(m, dict) else m[:1] for m in self.messages]}")

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.messages if isinstance(m, dict) and m["type"] == kind]


def is_type(kind: str) -> Callable[[dict | bytes], bool]:
    """A test for ``until``: the message is a JSON message of this type."""
    return lambda message: isinstance(message, dict) and message["type"] == kind
