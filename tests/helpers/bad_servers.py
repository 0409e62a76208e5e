"""Routes for ``MjpegTestServer`` that misbehave the way broken or hostile video servers do.

Each is a real HTTP response on a real loopback socket: garbage labelled as video, garbage that never
ends, and a body that trickles in a byte at a time. Random bytes are seeded, so a failure reproduces.
"""

from __future__ import annotations

import random

from tests.helpers.mjpeg_server import Handler, Route


def garbage(size: int, seed: int = 7) -> Route:
    """``size`` random bytes served whole as ``video/mp4``, with a Content-Length."""
    body = random.Random(seed).randbytes(size)
    return lambda handler: handler.reply(200, "video/mp4", body)


def endless_garbage(seed: int = 7, chunk: int = 4096) -> Route:
    """Random bytes as ``video/mp4`` in an HTTP/1.1 chunked response that never ends (until the server closes)."""

    def route(handler: Handler) -> None:
        rng = random.Random(seed)
        handler.protocol_version = "HTTP/1.1"
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp4")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        while not handler.closing.is_set():
            handler.wfile.write(b"%x\r\n%s\r\n" % (chunk, rng.randbytes(chunk)))
            handler.wfile.flush()

    return route


def trickle(body: bytes, content_type: str = "video/mp4", every: float = 1.0) -> Route:
    """The response headers at once, then ``body`` one byte every ``every`` seconds: a server that is
    never silent long enough for an idle timeout to fire."""

    def route(handler: Handler) -> None:
        handler.start_stream(content_type)
        for byte in body:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            if handler.closing.wait(every):  # the pace of the trickle; ends at once when the server closes
                return

    return route


def trickle_headers(every: float = 0.05) -> Route:
    """The status line and headers themselves a byte at a time, never finished: no idle timeout fires."""

    def route(handler: Handler) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nX-Padding: " + b"a" * 100_000
        for byte in head:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            if handler.closing.wait(every):
                return

    return route
