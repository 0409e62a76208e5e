"""An MJPEG camera on 127.0.0.1 that serves one client at a time, the way DroidCam's free app and many
cheap IP cameras do: while it streams to a client it does not listen, so a second connection is
refused, and like them it only notices a client left when writing the next frame fails. After the
client (or the camera itself, ``frames_per_client``) ends the stream, it listens for the next one.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.helpers.mjpeg_server import frame_jpeg, multipart

HEAD = b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=frame\r\nCache-Control: no-cache\r\n\r\n"


class OneClientCamera:
    """Streams ``frame_jpeg(k)`` every ``interval`` s to one client at a time; ``close()`` in teardown."""

    def __init__(self, port: int, *, frames_per_client: int = 10_000, interval: float = 0.1) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/cam.mjpg"
        self.frames_per_client = frames_per_client
        self.interval = interval
        self.clients = 0  # connections accepted so far
        self._closing = threading.Event()
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._listening = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name="one-client-camera", daemon=True)
        self._thread.start()

    def wait_listening(self, timeout: float = 10.0) -> None:
        with self._listening:
            assert self._listening.wait_for(lambda: self._listener is not None, timeout), "camera never listened"

    def _listen(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(1)
        sock.settimeout(0.05)  # to see ``close()``
        with self._listening:
            self._listener = sock
            self._listening.notify_all()
        return sock

    def _run(self) -> None:
        while not self._closing.is_set():
            listener = self._listen()
            try:
                client = None
                while client is None and not self._closing.is_set():
                    with contextlib.suppress(TimeoutError):
                        client, _ = listener.accept()
            finally:
                with self._lock:
                    self._listener = None
                listener.close()  # busy: nobody else gets in
            if client is not None:
                with client:
                    self.clients += 1
                    self._serve(client)

    def _serve(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the client left: the write failed
            client.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                data = client.recv(4096)
                if not data:
                    return
                request += data
            client.sendall(HEAD)
            for k in range(self.frames_per_client):
                client.sendall(multipart([frame_jpeg(k % 900)]))
                if self._closing.wait(self.interval):  # the camera's frame rate
                    return

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        assert not self._thread.is_alive()
