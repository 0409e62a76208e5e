"""Every HTTP request FFmpeg makes for a shared app's stream, checked: a forward proxy on loopback.

FFmpeg fetches what an HLS playlist or a DASH manifest lists, re-reads a live playlist every few seconds
and follows redirects, all by itself and out of reach of the check at open (``hls_guard``). Its
``http_proxy`` option, which the HLS and DASH demuxers pass on to each request they make and TLS uses for
its ``CONNECT`` tunnel, sends every one of those requests here. Each names its host, which is looked up and
checked with the guard when the request comes; the connection then goes to the address that was checked, so
neither a later playlist, nor a redirect, nor a second DNS answer reaches a host a visitor may not.

One proxy per stream connection, owned by the source that opened it (started before FFmpeg opens the URL,
closed after it). A refused request is answered 403 and remembered: the source ends with that reason
instead of FFmpeg's "HTTP error 403". The proxy only reaches what the guard allows, which is no more than
any program on the machine reaches by itself, so it asks for no password.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
from collections.abc import Callable, MutableMapping
from urllib.parse import urlsplit

from pipeline.errors import SourceError
from pipeline.sources.guard import FFMPEG_PROTOCOLS, UrlGuard, guards_http
from pipeline.sources.urls import mask_url

MAX_HEAD = 64 << 10  # a request's or a response's header block; FFmpeg's are far below
CHUNK = 64 << 10
_HOP_BY_HOP = (b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"proxy-authenticate")


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The header block up to its blank line, and what came after it; empty if the peer closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD:
            raise ValueError("header block too large")
        chunk = sock.recv(CHUNK)
        if not chunk:
            return b"", b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _closing(head: bytes) -> bytes:
    """A header block with its hop-by-hop headers replaced by ``Connection: close``: one request per
    connection, so every request FFmpeg makes comes through a new one and is checked."""
    first, *lines = head.split(b"\r\n")
    kept = [line for line in lines if line.split(b":", 1)[0].strip().lower() not in _HOP_BY_HOP]
    return b"\r\n".join([first, *kept, b"Connection: close", b"", b""])


def _answer(sock: socket.socket, status: str, text: str) -> None:
    body = text.encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
    with contextlib.suppress(OSError):
        sock.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)


def drop_no_proxy(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Remove ``no_proxy`` from a shared app's environment, and say so: FFmpeg connects directly to the hosts
    it names, past the proxy. None when it was not set."""
    value = environ.pop("no_proxy", None)
    if value is None:
        return None
    return f"no_proxy ({value}) is ignored on a shared app: FFmpeg's requests go through the URL guard"


def ffmpeg_guarded(url: str, guard: UrlGuard | None, timeout: float) -> GuardProxy | None:
    """The proxy an http(s) stream needs on a shared app (unstarted; use it as a context manager); None
    where anything goes or FFmpeg makes no HTTP request (RTSP, RTMP, SRT are checked once, pinned)."""
    return GuardProxy(guard, timeout) if guard is not None and guards_http(url, guard) else None


class GuardProxy:
    """A loopback HTTP proxy that lets a request through only to a host ``guard`` allows (module doc).

    Use as a context manager: ``url`` is what FFmpeg's ``http_proxy`` option takes; ``refused`` is the
    first refusal's reason; ``error`` an unexpected failure of one of its threads (raised by ``close``)."""

    def __init__(self, guard: UrlGuard, timeout: float) -> None:
        self.guard = guard
        self.timeout = timeout
        self.refused: str | None = None
        self.error: BaseException | None = None
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._guarded, args=(self._accept,), name="source-proxy", daemon=True)

    @property
    def ffmpeg_options(self) -> dict[str, str]:
        """FFmpeg's options for a stream opened through this proxy: every HTTP request goes here, and it
        may only use ``FFMPEG_PROTOCOLS`` (no file, data, UDP or RTP, whatever a playlist lists)."""
        return {"http_proxy": self.url, "protocol_whitelist": FFMPEG_PROTOCOLS}

    def check(self) -> None:
        """Raise SourceError with the first refusal's reason, if a request was refused."""
        if self.refused is not None:
            raise SourceError(f"FFmpeg was led to a host a shared app does not open: {self.refused}")

    def __enter__(self) -> GuardProxy:
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting, cut every open connection, and join the threads (raising one's failure)."""
        self._stop.set()
        with self._lock:
            sockets = [self._listener, *self._open]
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._acceptor.ident is not None:
            self._acceptor.join(self.timeout)
        with self._lock:
            threads = list(self._threads)  # the acceptor adds no more
        for thread in threads:
            thread.join(self.timeout)
        if self.error is not None:
            raise self.error

    def _guarded(self, work: Callable[..., None], *args: object) -> None:
        try:
            work(*args)
        except BaseException as exc:  # kept and raised by close(): a worker thread's failure is not lost
            if not self._stop.is_set() and self.error is None:
                self.error = exc

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._stop.is_set():
                sock.close()
                return False
            self._open.add(sock)
            return True

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        sock.close()

    def _accept(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not selector.select(0.5):
                    continue
                try:
                    client, _ = self._listener.accept()
                except OSError:
                    return  # closed by close()
                if not self._track(client):
                    return
                thread = threading.Thread(target=self._guarded, args=(self._serve, client), name="source-proxy-conn")
                thread.daemon = True
                with self._lock:
                    self._threads = [t for t in self._threads if t.is_alive()] + [thread]
                thread.start()

    def _serve(self, client: socket.socket) -> None:
        try:
            client.settimeout(self.timeout)  # for the request's head; the relay waits as long as FFmpeg does
            self._handle(client)
        except (OSError, ValueError):
            pass  # FFmpeg went away, an upstream failed mid-answer, or a malformed request: that connection only
        finally:
            self._forget(client)

    def _handle(self, client: socket.socket) -> None:
        head, rest = _read_head(client)
        if not head:
            return
        method, target, *_ = [*head.split(b"\r\n", 1)[0].decode("latin-1").split(" "), "", ""]
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            url, where = f"https://{target}/", (host.strip("[]"), int(port) if port.isdigit() else 443)
        elif method in ("GET", "HEAD") and target.lower().startswith("http://"):
            parts = urlsplit(target)
            url, where = target, (parts.hostname or "", parts.port or 80)
        else:
            _answer(client, "405 Method Not Allowed", f"only GET and HEAD of http:// and CONNECT pass, not {method}")
            return
        upstream = self._connect(client, url, *where)
        if upstream is None:
            return
        try:
            if method == "CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self._relay(client, upstream, both_ways=True, first=rest)
            else:
                parts = urlsplit(target)
                path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                line = f"{method} {path} HTTP/1.1".encode()
                upstream.sendall(_closing(line + b"\r\n" + head.split(b"\r\n", 1)[1]) + rest)
                answer, body = _read_head(upstream)
                if answer:
                    client.sendall(_closing(answer) + body)
                    self._relay(upstream, client, both_ways=False)
        finally:
            self._forget(upstream)

    def _connect(self, client: socket.socket, url: str, host: str, port: int) -> socket.socket | None:
        """A connection to the address the guard checked for ``host`` (by name where the owner allowed it);
        None, with the client answered, where the guard refuses or nothing answers."""
        try:
            address = self.guard.address(host, port, mask_url(url))
        except SourceError as refused:
            self.refused = self.refused or str(refused)
            _answer(client, "403 Forbidden", str(refused))
            return None
        try:
            upstream = socket.create_connection((str(address) if address else host, port), timeout=self.timeout)
        except OSError as exc:
            _answer(client, "502 Bad Gateway", f"{mask_url(url)}: {exc.strerror or exc}")
            return None
        return upstream if self._track(upstream) else None

    def _relay(self, source: socket.socket, sink: socket.socket, both_ways: bool, first: bytes = b"") -> None:
        """Copy ``source`` to ``sink`` (and back, for a tunnel) until either side closes. What FFmpeg sends
        after a plain request's head is not passed on: the next request comes on a new connection."""
        source.settimeout(None)
        sink.settimeout(None)  # close() cuts a relay short; a slow reader only slows it
        if first:
            sink.sendall(first)
        with selectors.DefaultSelector() as selector:
            selector.register(source, selectors.EVENT_READ, sink)
            selector.register(sink, selectors.EVENT_READ, source if both_ways else None)
            while not self._stop.is_set():
                for key, _ in selector.select(self.timeout):
                    data = key.fileobj.recv(CHUNK)  # type: ignore[union-attr]
                    if not data:
                        return
                    if key.data is not None:
                        key.data.sendall(data)
