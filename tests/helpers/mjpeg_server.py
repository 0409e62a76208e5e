"""Real HTTP servers on 127.0.0.1 for the MJPEG source tests: a threaded Python server and FFmpeg.

The Python server writes hand-built multipart bodies in deliberately odd split sizes, so the source
is tested against real sockets and real chunking, not mocks.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

Route = Callable[["Handler"], None]


def make_jpeg(value: int, width: int = 64, height: int = 48, quality: int = 90) -> bytes:
    """A flat JPEG whose red channel (RGB) is ``value``, so a decoded frame tells which one it was."""
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = value
    rgb[..., 2] = 255 - value
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def frame_jpeg(k: int) -> bytes:
    """A flat 64x48 JPEG that encodes frame number ``k`` (< 900) in its red and green levels."""
    rgb = np.zeros((48, 64, 3), dtype=np.uint8)
    rgb[..., 0] = 8 * (k % 30) + 4
    rgb[..., 1] = 8 * (k // 30) + 4
    rgb[..., 2] = 251
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def frame_id(image: np.ndarray) -> int:
    """Inverse of ``frame_jpeg``: which frame a decoded RGB image is."""
    red, green = (round((float(image[..., c].mean()) - 4) / 8) for c in (0, 1))
    return red + 30 * green


def multipart(
    jpegs: list[bytes], delimiter: bytes = b"--frame", *, content_length: bool = False, eol: bytes = b"\r\n"
) -> bytes:
    """A multipart/x-mixed-replace body for ``jpegs``."""
    out = bytearray()
    for jpeg in jpegs:
        out += delimiter + eol + b"Content-Type: image/jpeg" + eol
        if content_length:
            out += b"Content-Length: %d" % len(jpeg) + eol
        out += eol + jpeg + eol
    return bytes(out)


class Handler(BaseHTTPRequestHandler):
    """Dispatches GET to the route registered for the path."""

    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        route = self.server.owner.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.reply(404, "text/plain", b"not found")
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            route(self)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    # -- helpers for routes -----------------------------------------------------------------------

    @property
    def closing(self) -> threading.Event:
        return self.server.owner.closing

    def reply(self, status: int, content_type: str, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.flush()

    def write_split(self, data: bytes, rng: random.Random, max_piece: int = 97) -> None:
        """Write ``data`` in random small pieces, flushing each, so reads split boundaries anywhere."""
        pos = 0
        while pos < len(data):
            size = rng.choice((1, 2, 3, 5, 7, rng.randint(1, max_piece)))
            self.wfile.write(data[pos : pos + size])
            self.wfile.flush()
            pos += size


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: MjpegTestServer


class MjpegTestServer:
    """A threaded HTTP server on 127.0.0.1:<free port>; register routes, then ``close()`` in teardown."""

    def __init__(self, port: int = 0) -> None:
        self.routes: dict[str, Route] = {}
        self.closing = threading.Event()
        self._httpd = _Server(("127.0.0.1", port), Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="mjpeg-test-server", daemon=True
        )
        self._thread.start()

    def url(self, path: str, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}{path}"

    def __enter__(self) -> MjpegTestServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.closing.set()  # releases routes that hold their connection open
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_listening(port: int) -> bool:
    """Whether some process listens on ``port`` (Linux /proc), without connecting: FFmpeg's
    ``-listen 1`` serves exactly one client, so a probe connection would use it up."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


class FfmpegServer:
    """``ffmpeg -f mpjpeg -listen 1`` serving a test pattern on 127.0.0.1."""

    def __init__(self, log_path: Path, *, content_type: str | None = None, size: str = "320x240") -> None:
        ffmpeg = shutil.which("ffmpeg")
        assert ffmpeg is not None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/stream"
        cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning", "-re"]
        cmd += ["-f", "lavfi", "-i", f"testsrc=size={size}:rate=10", "-t", "30", "-f", "mpjpeg"]
        if content_type:
            cmd += ["-content_type", content_type]
        cmd += ["-listen", "1", self.url]
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_listening(self, timeout: float = 10.0) -> None:
        """Poll /proc until FFmpeg listens (it has no readiness signal that does not consume its one client)."""
        tick = threading.Event()
        for _ in range(int(timeout / 0.02)):
            if is_listening(self.port):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"ffmpeg exited with {self.proc.returncode}: {self.log_path.read_text()}")
            tick.wait(0.02)
        raise TimeoutError(f"ffmpeg did not listen on port {self.port} within {timeout} s")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
