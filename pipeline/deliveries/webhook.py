"""Alerts POSTed as JSON to a URL of the user's (``--webhook``), optionally signed (``--webhook-secret``).

Each alert is one parcel: the payload (``payload.alert_json``, version 1, snapshot included) serialised once,
with a delivery id (a UUID) that stays the same across retries, so a receiver that saw a request whose answer
was lost can tell the retry is the same alert. Every try carries a fresh ``X-Onlooker-Timestamp`` and signs
``"<timestamp>.<body>"`` with HMAC-SHA256: the body is byte for byte the same on every try, but a receiver
can reject a request whose timestamp is old, so a captured request cannot be replayed later, and a retry
after a long outage is still accepted (a signature over the first try's time would look like a replay).

2xx is delivered. 408, 429, 5xx and network failures are tried again by the base's backoff (``Retry-After``
in seconds is honoured, up to ``RETRY_AFTER_MAX``); any other answer means the receiver refuses this request
and always will (a wrong path, a rejected signature, a redirect), so it is dropped and counted. The URL's
password and secret-looking query values never reach a log or a status line (``mask_url``, ``scrub``).
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

import httpx

from pipeline.deliveries.base import Delivery, DeliveryError
from pipeline.deliveries.payload import PAYLOAD_VERSION, alert_json
from pipeline.errors import ConfigError
from pipeline.events import Alert, Event
from pipeline.sources.urls import mask_url, scrub

if TYPE_CHECKING:
    from pipeline.config import Settings

CONNECT_TIMEOUT = 3.0  # seconds to open the connection
ANSWER_TIMEOUT = 5.0  # seconds of silence while sending the body or waiting for the answer
RETRY_AFTER_MAX = 60  # a receiver's Retry-After is honoured up to this many seconds
USER_AGENT = f"Onlooker/{PAYLOAD_VERSION}"  # the payload version: what a receiver can act on
RETRY_STATUSES = frozenset({408, 429})  # besides 5xx: the receiver is busy, not refusing


@dataclass(frozen=True)
class Post:
    """One alert as it goes out: the body serialised once, and the delivery id its retries share."""

    delivery_id: str
    body: bytes


def check_webhook_url(url: str) -> str:
    """The URL stripped of spaces, or a ConfigError that says what is expected (credentials masked)."""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"--webhook {mask_url(url)}: not a URL; say https://host/path") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(f"--webhook {mask_url(url)}: only http:// and https:// URLs can be POSTed to")
    if not parts.hostname:
        raise ConfigError(f"--webhook {mask_url(url)}: no host; say https://host/path")
    return url


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``X-Onlooker-Signature``: ``sha256=`` and the hex HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed by the
    secret's UTF-8 bytes (the way ``docs/alerts.md`` tells a receiver to check it)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookDelivery(Delivery):
    """POSTs every alert (started and cleared) to one URL from its own thread, with its own HTTP client."""

    name: ClassVar[str] = "webhook"

    def __init__(self, url: str, secret: str | None = None, timeout: float = ANSWER_TIMEOUT) -> None:
        """``timeout``: seconds of silence before a try counts as failed (the connect waits at most
        ``CONNECT_TIMEOUT`` of them)."""
        super().__init__()
        self.url = check_webhook_url(url)
        self.shown = mask_url(self.url)
        self.secret = secret or None
        self.timeout = timeout
        self._hold_until = 0.0  # monotonic time before which the receiver asked not to be tried (Retry-After)
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout)),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,  # a redirected POST may turn into a GET elsewhere; the user fixes the URL
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookDelivery | None:
        if not settings.webhook:
            return None
        return cls(settings.webhook, settings.webhook_secret)

    def parcels(self, event: Event) -> list[Post]:
        if not isinstance(event, Alert):
            return []
        return [Post(uuid.uuid4().hex, alert_json(event))]

    def ready(self) -> bool:
        """Not before the time a receiver's ``Retry-After`` asked for (the base's backoff may be shorter)."""
        return time.monotonic() >= self._hold_until

    def send(self, parcel: Post) -> None:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",  # UTF-8, as JSON always is (RFC 8259)
            "X-Onlooker-Event": "alert",
            "X-Onlooker-Delivery": parcel.delivery_id,
            "X-Onlooker-Timestamp": timestamp,
        }
        if self.secret:
            headers["X-Onlooker-Signature"] = sign(self.secret, timestamp, parcel.body)
        try:
            response = self.client.post(self.url, content=parcel.body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"webhook {self.shown}: {self._network_problem(exc)}") from None
        status = response.status_code
        if 200 <= status < 300:
            return
        if status in RETRY_STATUSES or status >= 500:
            raise DeliveryError(f"webhook {self.shown}: HTTP {status}{self._wait_asked(response)}")
        raise DeliveryError(
            f"webhook {self.shown}: the receiver refused the alert (HTTP {status}); it is not sent again",
            retry=False,
        )

    def ended(self) -> None:
        super().ended()
        self.client.close()

    def _wait_asked(self, response: httpx.Response) -> str:
        """Honour ``Retry-After: <seconds>`` (capped); the words that say so, or ""."""
        try:
            seconds = min(max(int(response.headers.get("Retry-After", "")), 0), RETRY_AFTER_MAX)
        except ValueError:  # absent, not whole seconds, or an HTTP date: the backoff alone decides
            return ""
        self._hold_until = time.monotonic() + seconds
        return f" (the receiver asked to wait {seconds:.0f} s)"

    def _network_problem(self, exc: httpx.HTTPError) -> str:
        """One plain line for a failure below HTTP, without the URL's credentials."""
        if isinstance(exc, httpx.ConnectTimeout):
            return f"no connection within {min(CONNECT_TIMEOUT, self.timeout):g} s"
        if isinstance(exc, httpx.TimeoutException):
            return f"no answer within {self.timeout:g} s"
        if isinstance(exc, httpx.ConnectError):
            return f"cannot connect ({scrub(str(exc), self.url) or 'refused'}); is the receiver running?"
        return scrub(str(exc), self.url) or type(exc).__name__
