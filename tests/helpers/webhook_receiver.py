"""For the alert delivery tests: a real HTTP receiver on loopback, and a delivery running on a real bus.

``WebhookReceiver`` is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 whose thread the context manager owns.
It records every POST or PUT (path, headers, body, arrival time, the status it answered) and answers 200,
unless told to answer another status to the next N requests (``fail_next``), or to hold the next N without
an answer (``hang_next``) until ``release`` or teardown: longer than any delivery's timeout. ``stop`` closes
the socket (connections are refused: the receiver is "down") and ``start`` listens again on the same port.

``DeliveryRun`` attaches a delivery to an ``EventBus``, starts it, and records what it says on the bus
(``DeliveryStatus``). Every wait in both is a condition or an event with a deadline, never a sleep.
``alert`` and ``picture`` make the alerts (with a snapshot JPEG that has detail in it) that both the webhook
and the push tests send.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from pipeline.deliveries.base import Delivery
from pipeline.events import Alert, AlertState, CameraTag, DeliveryStatus, Event, EventBus


@dataclass(frozen=True)
class Received:
    """One request as it arrived: ``headers`` by lower-case name, ``at`` on ``time.monotonic``."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float
    status: int  # what the receiver answered (0: held without an answer)


FRONT_DOOR = CameraTag("front-door", "Front door")
Answer = tuple[int, dict[str, str]] | None  # a status and headers, or None: hold the request unanswered


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do: clients reuse the connection

    def setup(self) -> None:
        super().setup()
        self.server.owner._opened(self.connection)

    def finish(self) -> None:
        super().finish()
        self.server.owner._closed(self.connection)

    def do_POST(self) -> None:
        self.server.owner._serve(self)

    do_PUT = do_POST

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: WebhookReceiver


class WebhookReceiver:
    """A recording HTTP receiver on 127.0.0.1; use it as a context manager."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.port = 0
        self._answers: list[Answer] = []  # how the next requests are answered, oldest first
        self._connections: set[socket.socket] = set()
        self._cond = threading.Condition()
        self._released = threading.Event()  # lets held requests go (at ``release``, ``stop`` and teardown)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/hook", userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}{path}"

    # --- life ---
    def start(self) -> WebhookReceiver:
        """Listen (again, on the same port after ``stop``)."""
        self._released.clear()
        self._httpd = _Server(("127.0.0.1", self.port), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="webhook-receiver")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go down: held requests are let go, open connections are cut and new ones are refused."""
        self._released.set()
        with self._cond:
            for connection in self._connections:
                with contextlib.suppress(OSError):  # the client may have closed it already
                    connection.shutdown(socket.SHUT_RDWR)
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- what it answers ---
    def fail_next(self, count: int, status: int = 500, headers: dict[str, str] | None = None) -> None:
        with self._cond:
            self._answers += [(status, dict(headers or {}))] * count

    def hang_next(self, count: int = 1) -> None:
        with self._cond:
            self._answers += [None] * count

    def release(self) -> None:
        """Let the held requests go (their clients gave up long ago)."""
        self._released.set()

    # --- what it heard ---
    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The first ``count`` requests, once they have arrived; AssertionError after ``timeout`` seconds."""
        with self._cond:
            arrived = self._cond.wait_for(lambda: len(self.requests) >= count, timeout)
            assert arrived, f"{len(self.requests)} of {count} requests arrived within {timeout} s"
            return self.requests[:count]

    def answered(self, status: int) -> list[Received]:
        with self._cond:
            return [r for r in self.requests if r.status == status]

    def _opened(self, connection: socket.socket) -> None:
        with self._cond:
            self._connections.add(connection)

    def _closed(self, connection: socket.socket) -> None:
        with self._cond:
            self._connections.discard(connection)

    def _serve(self, handler: _Handler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        with self._cond:
            answer = self._answers.pop(0) if self._answers else (200, {})
            parts = urlsplit(handler.path)
            self.requests.append(
                Received(
                    method=handler.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in handler.headers.items()},
                    body=body,
                    at=time.monotonic(),
                    status=answer[0] if answer else 0,
                )
            )
            self._cond.notify_all()
        if answer is None:
            self._released.wait(60)  # no answer; the client times out and tries again on a new connection
            handler.close_connection = True
            return
        status, headers = answer
        handler.send_response(status)
        for name, value in {"Content-Length": "0", **headers}.items():
            handler.send_header(name, value)
        handler.end_headers()


class DeliveryRun:
    """A delivery attached to a fresh ``EventBus`` and started; ``close`` ends the session the usual way
    (the bus closes, the delivery drains and ends). What it says (``DeliveryStatus``) is kept in ``statuses``."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.bus = EventBus()
        self.statuses: list[DeliveryStatus] = []
        self._cond = threading.Condition()
        self._watch = self.bus.subscribe("test-statuses", accepts=lambda e: isinstance(e, DeliveryStatus))
        self._listener = threading.Thread(target=self._listen, name="delivery-statuses", daemon=True)
        delivery.attach(self.bus)
        delivery.start()
        self._listener.start()

    def publish(self, *events: Event) -> None:
        for event in events:
            self.bus.publish(event)

    def wait_status(self, check: Callable[[DeliveryStatus], bool], timeout: float = 10.0) -> DeliveryStatus:
        """The first status that passes ``check`` (said so far or to come); AssertionError after ``timeout``."""
        with self._cond:
            self._cond.wait_for(lambda: any(check(s) for s in self.statuses), timeout)
            found = [s for s in self.statuses if check(s)]
            assert found, f"no such status within {timeout} s; said: {self.statuses}"
            return found[0]

    def close(self, timeout: float = 10.0) -> None:
        self.bus.close()
        assert self.delivery.join(timeout), f"{self.delivery.name} did not end within {timeout} s"
        self._listener.join(timeout)

    def __enter__(self) -> DeliveryRun:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:  # a failed test: do not wait for the drain
            self.delivery.stop()
            self.bus.close()

    def _listen(self) -> None:
        for event in self._watch:
            assert isinstance(event, DeliveryStatus)
            with self._cond:
                self.statuses.append(event)
                self._cond.notify_all()


def picture() -> tuple[np.ndarray, bytes]:
    """A 48×64 picture with detail in it (a gradient and a square) and its JPEG."""
    bgr = np.zeros((48, 64, 3), np.uint8)
    bgr[..., 0] = np.arange(64, dtype=np.uint8)[None, :] * 4
    bgr[..., 1] = np.arange(48, dtype=np.uint8)[:, None] * 5
    bgr[10:30, 20:40, 2] = 255
    ok, jpeg = cv2.imencode(".jpg", bgr)
    assert ok
    return bgr, jpeg.tobytes()


def alert(number: int = 1, state: AlertState = "started", jpeg: bytes = b"") -> Alert:
    """Alert ``number`` of rule "person" on the front door camera (its id ends in the number, zero-padded)."""
    return Alert(
        t=12.5 + number,
        wall=1_700_000_000.25 + number,
        camera=FRONT_DOOR,
        alert_id=f"front-door-person-{number:08x}",
        rule="person",
        text="a person at the door",
        state=state,
        confidence=0.875,
        reason="someone stands on the doorstep",
        snapshot=f"alerts/front-door-person-{number:08x}.jpg" if jpeg else "",
        jpeg=jpeg,
    )
