"""A real HTTP(S) server on loopback for a folder, which records what it is asked and can answer FFmpeg
(its User-Agent says ``Lavf``) otherwise than anyone else: the hostile server a shared app's guard meets."""

from __future__ import annotations

import contextlib
import functools
import http.server
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Served:
    """A running server: its base URL, the paths asked for, and how it answers FFmpeg alone."""

    url: str
    requests: list[str] = field(default_factory=list)
    #: path -> the body FFmpeg gets instead of the file's, given the file's bytes and how often FFmpeg asked
    for_ffmpeg: dict[str, Callable[[bytes, int], bytes]] = field(default_factory=dict)
    #: path -> where FFmpeg is redirected (302) instead
    redirect_ffmpeg: dict[str, str] = field(default_factory=dict)
    ffmpeg_asked: dict[str, int] = field(default_factory=dict)


class _Handler(http.server.SimpleHTTPRequestHandler):
    served: Served

    def do_GET(self) -> None:
        served, path = self.served, self.path
        served.requests.append(path)
        if "Lavf" not in self.headers.get("User-Agent", ""):
            super().do_GET()
            return
        served.ffmpeg_asked[path] = served.ffmpeg_asked.get(path, 0) + 1
        if path in served.redirect_ffmpeg:
            self.send_response(302)
            self.send_header("Location", served.redirect_ffmpeg[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path in served.for_ffmpeg:
            body = served.for_ffmpeg[path](Path(self.translate_path(path)).read_bytes(), served.ffmpeg_asked[path])
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.apple.mpegurl")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 made with the openssl command (FFmpeg does not verify it)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
           "-days", "1", "-subj", "/CN=127.0.0.1"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return cert, key


@contextlib.contextmanager
def serving(folder: Path, tls: tuple[Path, Path] | None = None) -> Iterator[Served]:
    """A static HTTP server on 127.0.0.1 for ``folder`` (HTTPS with ``tls``'s certificate and key)."""
    served = Served("")
    handler = type("Handler", (_Handler,), {"served": served})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    served.url = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
