"""URLs as users give them: credentials masked for display, HTTP failures turned into one clear line.

Shared by every source that speaks HTTP (MJPEG cameras, URL sniffing) so the same failure reads
the same everywhere, and no password ever reaches a log, a status event or the UI.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

_SECRET_QUERY_RE = re.compile(
    r"(?i)(^|[&;])((?:user(?:name)?|login|pass(?:word|phrase)?|passwd|pwd|token|api_?key|key|auth|secret|sig(?:nature)?)=)"
    r"[^&;]*"
)


def mask_url(uri: str) -> str:
    """The URL with user:password and secret-looking query values replaced by ``***``, fit for logs."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = _SECRET_QUERY_RE.sub(r"\1\2***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")


def strip_credentials(uri: str) -> str:
    """The URL without its user:password and secret-looking query parameters, fit to be written to a file.

    Unlike ``mask_url`` nothing is left in their place (a saved ``***`` would be sent as a password), and
    the text is not parsed, so a URL ``urlsplit`` refuses still loses its credentials.
    """
    uri = _USERINFO_RE.sub(r"\1", uri.strip())
    base, _, rest = uri.partition("?")
    query, hash_mark, fragment = rest.partition("#")
    params = [p for p in re.split(r"[&;]", query) if p]
    kept = [p for p in params if not _SECRET_QUERY_RE.match(p)]
    if len(kept) == len(params):
        return uri
    return base + ("?" + "&".join(kept) if kept else "") + hash_mark + fragment


def scrub(text: str, uri: str) -> str:
    """Remove the URL's credentials from text that came from a library (exception messages)."""
    text = text.replace(uri, mask_url(uri))
    try:
        parts = urlsplit(uri)
    except ValueError:
        return text
    secrets = [parts.password, parts.username]
    secrets += [m.group(0).split("=", 1)[1] for m in _SECRET_QUERY_RE.finditer(parts.query)]
    for secret in secrets:
        if secret and len(secret) > 1:
            text = text.replace(secret, "***").replace(unquote(secret), "***")
    return text


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def describe_http_status(status: int, uri: str, has_credentials: bool = False) -> str:
    """One line for a non-2xx HTTP status, with the usual fix."""
    name = mask_url(uri)
    if status == 401:
        if has_credentials:
            return f"HTTP 401 from {name}: the camera rejected the user name or password in the URL; check them"
        return f"HTTP 401 from {name}: the camera needs credentials; put them in the URL as http://user:pass@host/…"
    if status == 403:
        return f"HTTP 403 from {name}: access is forbidden; check the user's rights on the camera"
    if status == 404:
        return f"HTTP 404 from {name}: there is no stream at this path; check the URL's path"
    if status >= 500:
        return f"HTTP {status} from {name}: the camera or server failed; try again or restart it"
    return f"HTTP {status} from {name}: expected 200 with a video stream"


def describe_http_error(exc: httpx.HTTPError, uri: str, connect_timeout: float, read_timeout: float) -> str:
    """One line for a connection-level HTTP failure, saying what to check."""
    name = mask_url(uri)
    detail = scrub(str(exc), uri) or type(exc).__name__
    chain = list(exception_chain(exc))
    if isinstance(exc, httpx.UnsupportedProtocol):
        return f"{name} is not an http:// or https:// URL"
    if isinstance(exc, httpx.ConnectTimeout):
        return (
            f"cannot connect to {name}: no answer within {connect_timeout:g} s"
            " — is the camera on and reachable from this machine?"
        )
    if isinstance(exc, httpx.ReadTimeout):
        return f"{name} sent nothing for {read_timeout:g} s — the camera stopped streaming"
    if isinstance(exc, httpx.ConnectError):
        if any(isinstance(e, ConnectionRefusedError) for e in chain):
            return f"cannot connect to {name}: connection refused — is the camera on and the address right?"
        if any(isinstance(e, socket.gaierror) for e in chain):
            host = urlsplit(uri).hostname or "?"
            return f"cannot connect to {name}: the host name {host!r} does not resolve — check the address"
        return f"cannot connect to {name}: {detail}"
    if isinstance(exc, httpx.TooManyRedirects):
        return f"{name} redirects too many times; use the final stream address"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out talking to {name}: {detail}"
    if isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError):
        return f"the connection to {name} broke off: {detail}"
    return f"HTTP error from {name}: {detail}"
