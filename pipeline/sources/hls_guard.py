"""What a remote HLS playlist lists, checked on a shared app before FFmpeg fetches any of it.

FFmpeg opens an HLS playlist itself and then fetches what it lists (variant and rendition playlists,
segments, keys, initialization sections) from wherever it says, out of the guard's reach. So on a
shared app every http(s) URL is read once before FFmpeg gets it; when it is a playlist, every URI in it
and in the playlists it lists (fetched the same way, at most ``MAX_PLAYLISTS``) must pass the guard like
a typed URL. The text is read the way FFmpeg's HLS demuxer reads it (lines end at CR, LF or NUL;
attribute values are bare or quoted with backslash escapes), and a URI that names a host must be a
plain ``scheme://host/…`` URL, so a URI cannot mean one host to this check and another to FFmpeg.

This is a check at open, repeated at each reconnect, so that a visitor hears the reason up front. FFmpeg
re-reads a live playlist on its own, follows a segment's redirects, and may be answered differently from
this check: what holds for all of that is the proxy every request of FFmpeg goes through (``guard_proxy``),
and FFmpeg's protocol whitelist (``guard.FFMPEG_PROTOCOLS``).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from pipeline.errors import SourceError
from pipeline.sources.guard import UrlGuard, guards_http
from pipeline.sources.http_stream import Line, open_stream
from pipeline.sources.urls import mask_url

MAX_PLAYLIST_BYTES = 4 << 20  # a VOD playlist of some 40,000 segments
MAX_PLAYLISTS = 64  # a master playlist, its variants and renditions
PLAYLIST_START = b"#EXTM3U"  # what FFmpeg's HLS demuxer needs the first line to be
_SPACE = " \t\n\v\f\r"  # av_isspace
_LINE_END = re.compile(rb"[\r\n\x00]")  # ff_get_line
MAX_LINE = 4095  # FFmpeg reads a playlist line into 4096 bytes (MAX_URL_SIZE) and drops the rest
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_AUTHORITY = re.compile(r"[\w.~%!$&'()*+,;=:@\[\]-]*", re.ASCII)  # RFC 3986: nothing two parsers split apart
_WHAT = {"#EXT-X-KEY": "a key", "#EXT-X-MAP": "an initialization section", "#EXT-X-MEDIA": "a rendition playlist"}


@dataclass(frozen=True)
class Listed:
    """One URI a playlist lists, as written: what it is (``a segment``), and whether FFmpeg reads it as a playlist."""

    uri: str
    what: str
    playlist: bool


def attributes(text: str) -> Iterator[tuple[str, str]]:
    """A tag's ``KEY=value`` pairs as FFmpeg's ``ff_parse_key_value`` reads them: a value is quoted, with
    backslash escapes (``URI="http:\\/\\/10.0.0.5/k"`` is ``http://10.0.0.5/k``), or bare up to a comma
    or space. Every pair, repeated keys too."""
    i, end = 0, len(text)
    while True:
        while i < end and (text[i] in _SPACE or text[i] == ","):
            i += 1
        equals = text.find("=", i)
        if i >= end or equals < 0:
            return
        key, i, value = text[i:equals], equals + 1, []
        if text[i : i + 1] == '"':
            i += 1
            while i < end and text[i] != '"':
                escaped = text[i] == "\\"
                if escaped and i + 1 >= end:
                    break
                value.append(text[i + escaped])
                i += 1 + escaped
            i += 1
        else:
            while i < end and text[i] not in _SPACE and text[i] != ",":
                value.append(text[i])
                i += 1
        yield key, "".join(value)


def listed(body: bytes) -> list[Listed]:
    """Every URI a playlist lists: each line that is not a tag (a variant playlist after
    ``#EXT-X-STREAM-INF``, else a segment) and every ``URI`` attribute of an ``#EXT-X-`` tag. A line
    longer than FFmpeg reads is listed both cut short, as FFmpeg sees it, and whole. Bytes that are not
    UTF-8 become U+FFFD, never a line end or a separator: no byte of a UTF-8 character is ASCII."""
    found: list[Listed] = []
    variant = False
    for raw in _LINE_END.split(body):
        # FFmpeg strips a line's end only: a URI with leading spaces is checked, not missed
        versions = [v.decode("utf-8", "replace").strip(_SPACE) for v in dict.fromkeys((raw[:MAX_LINE], raw))]
        line = versions[0]
        if line.startswith("#EXT-X-"):
            tag = line.partition(":")[0]
            variant = variant or tag == "#EXT-X-STREAM-INF"
            what = _WHAT.get(tag, f"the URI of an {tag} tag")
            pairs = [pair for version in versions for pair in attributes(version.partition(":")[2])]
            found += [Listed(value, what, tag == "#EXT-X-MEDIA") for key, value in pairs if key == "URI"]
        elif line and not line.startswith("#"):
            found += [Listed(v, "a variant playlist" if variant else "a segment", variant) for v in versions]
            variant = False
    return found


def absolute(uri: str, base: str) -> str:
    """``uri`` as a URL; one that names a host must be a URL every parser reads alike, since
    ``http:10.0.0.5/a.ts`` is a path to Python's ``urljoin`` and a host to FFmpeg."""
    scheme = uri.split(":", 1)[0].lower() if _SCHEME.match(uri) else ""
    try:
        url = uri if scheme else urljoin(base, uri)  # no scheme: a path, or //host/… on the playlist's scheme
        netloc: str | None = urlsplit(url).netloc
    except ValueError:  # a bad IPv6 bracket
        url, netloc = uri, None
    slashes = not scheme or uri[len(scheme) + 1 :].startswith("//")
    if (scheme in ("http", "https") and not slashes) or netloc is None or not _AUTHORITY.fullmatch(netloc):
        shown = uri if "@" not in uri and "=" not in uri else mask_url(uri)  # as written, unless it may hold secrets
        raise SourceError(f"'{shown}' is not a well-formed URL (FFmpeg might read another host from it)")
    return url


def _read(url: str, guard: UrlGuard, timeout: float, deadline: float) -> tuple[bytes, str] | None:
    """The playlist at ``url`` and the URL after redirects that relative URIs in it are resolved against;
    None for anything else (a video, an HTTP error)."""
    identity = {"Accept-Encoding": "identity"}  # the bytes as they are, not gzip to be undone
    timeouts = {"connect_timeout": timeout, "read_timeout": timeout}
    with open_stream(url, Line(), guard=guard, headers=identity, **timeouts) as stream:
        encoding = stream.response.headers.get("content-encoding", "identity").lower()
        if stream.response.status_code >= 300:
            return None
        if encoding != "identity":
            raise SourceError(f"{mask_url(url)}: the server compressed its answer ({encoding}) though asked not to")
        body = bytearray()
        for chunk in stream.chunks():
            body += chunk
            if body[: len(PLAYLIST_START)] != PLAYLIST_START[: len(body)]:
                return None
            if len(body) > MAX_PLAYLIST_BYTES or time.monotonic() > deadline:
                raise SourceError(f"{mask_url(url)}: the HLS playlist is too large or too slow to check")
        return (bytes(body), str(stream.response.url)) if body.startswith(PLAYLIST_START) else None


def check_playlist(url: str, guard: UrlGuard | None, timeout: float, stop: threading.Event) -> None:
    """On a shared app, raise SourceError naming the first URI that the HLS playlist at ``url`` or a
    playlist it leads to lists and the guard refuses; reading gives up once twice ``timeout`` has passed.
    Nothing to do for a local app, for a URL that is not http(s), or for one that is not a playlist."""
    if guard is None or not guards_http(url, guard):
        return
    deadline = time.monotonic() + 2 * timeout
    queue, seen, passed = [url], {url}, set()
    while queue and not stop.is_set():
        playlist = queue.pop(0)
        read = _read(playlist, guard, timeout, deadline)
        if read is None and playlist == url:
            return  # not a playlist: a video FFmpeg reads itself
        if read is None:  # FFmpeg might get a playlist there all the same (another request, another answer)
            raise SourceError(
                f"{mask_url(url)}: {mask_url(playlist)}, a playlist it leads to, did not answer with a playlist, "
                "so a shared app cannot check what FFmpeg would get there"
            )
        body, base = read
        passed.add(urlsplit(base)[:2])  # its host passed the guard when the playlist was fetched
        which = "the HLS playlist" if playlist == url else f"{mask_url(playlist)}, a playlist it leads to,"
        for item in listed(body):
            try:
                target = absolute(item.uri, base)
                origin = urlsplit(target)[:2]
                if origin not in passed:
                    guard.check(target)
                    passed.add(origin)
            except SourceError as refused:
                raise SourceError(
                    f"{mask_url(url)}: {which} lists {item.what} that a shared app does not open: {refused}"
                ) from None
            if item.playlist and target not in seen:
                if len(seen) >= MAX_PLAYLISTS:
                    raise SourceError(f"{mask_url(url)}: the HLS playlist lists over {MAX_PLAYLISTS} playlists")
                seen.add(target)
                queue.append(target)
