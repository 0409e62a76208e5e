"""Alerts pushed to phones and chats through Apprise (``--notify URL``, repeatable): ntfy, Telegram, Discord,
Slack, e-mail and the ~130 other services Apprise knows (https://github.com/caronc/apprise/wiki).

Every URL is checked when the session is made, so a typo is a one-line error at start, not a silent
failure at the first alert. Each alert is one notification per URL: the title says what and where
(``alert_title``), the body why and how sure (``alert_body``), and the snapshot is attached. Apprise
attaches files, so the JPEG is written for each try into a folder the delivery owns and removed after it.
Cleared alerts are pushed too, without a picture: a phone that said "the garage door is open" should also
say when it closed, or the last word the user has stays wrong.

A parcel remembers which URLs still have to be reached, so when one service fails only that one is tried
again (the base backs off) and the others are not sent the same alert twice. Apprise's own timeouts bound
a hung service: 3 s to connect and 5 s of silence (``cto``/``rto``, unless the URL sets them) and
``SEND_TIMEOUT`` for one notification in all. Delivery is at least once: a service that answers after the
deadline has the alert, and gets it again on the retry.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import apprise
from apprise.utils.parse import parse_url

from pipeline.deliveries.base import Delivery, DeliveryError
from pipeline.deliveries.payload import alert_body, alert_title
from pipeline.errors import ConfigError
from pipeline.events import Alert, Event

if TYPE_CHECKING:
    from pipeline.config import Settings

CONNECT_TIMEOUT = 3.0  # Apprise's ``cto`` when the URL does not set it
ANSWER_TIMEOUT = 5.0  # Apprise's ``rto`` (seconds of silence) when the URL does not set it
SEND_TIMEOUT = 15.0  # one notification to one service, everything included (an e-mail with its picture)
WIKI = "https://github.com/caronc/apprise/wiki"
ASSET = apprise.AppriseAsset(app_id="Onlooker", app_desc="Onlooker alerts")


class _Hush(logging.Filter):
    """Apprise logs a URL it cannot use nearly as given (a short token or an ntfy topic unmasked): while this
    thread checks a ``--notify`` URL its records are dropped, and our ConfigError says what is wrong instead."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "on", False)

    @contextmanager
    def checking(self) -> Iterator[None]:
        self.local.on = True
        try:
            yield
        finally:
            self.local.on = False


_HUSH = _Hush()
logging.getLogger(apprise.LOGGER_NAME).addFilter(_HUSH)


@dataclass(frozen=True)
class Target:
    """One ``--notify`` URL made ready: an Apprise with that one service, and the URL as it may be shown
    (Apprise's own privacy form: tokens and passwords masked)."""

    shown: str
    apprise: apprise.Apprise


@dataclass
class Push:
    """One alert and the targets that have not had it yet (``send`` strikes off each that took it)."""

    alert: Alert
    waiting: list[Target]


def make_target(url: str, number: int = 1) -> Target:
    """The ``number``-th ``--notify`` URL as a ``Target`` with the default timeouts, or a ConfigError that points
    to Apprise's list of URLs (the URL shown by its scheme only: a token may sit anywhere in it)."""
    with _HUSH.checking():
        service = apprise.Apprise.instantiate(url.strip(), asset=ASSET)
    if service is None:
        scheme = url.strip().partition("://")[0] if "://" in url else ""
        what = f"{scheme}://…" if scheme else "a URL without service:// in front"
        raise ConfigError(
            f"--notify #{number} ({what}): Apprise cannot send to this URL (an unknown service or a part missing);"
            f" see {WIKI} for each service's URL"
        )
    given = (parse_url(url.strip(), verify_host=False) or {}).get("qsd", {})
    if "cto" not in given:
        service.socket_connect_timeout = CONNECT_TIMEOUT
    if "rto" not in given:
        service.socket_read_timeout = ANSWER_TIMEOUT
    sender = apprise.Apprise(asset=ASSET)
    sender.add(service)
    return Target(service.url(privacy=True).partition("?")[0], sender)


def attachment_name(alert: Alert) -> str:
    """The snapshot's file name as services show it: the alert id (camera, rule, a short id), like the copy in
    the recording's ``alerts/`` folder, with anything unsafe in a file name replaced."""
    return re.sub(r"[^\w.-]+", "_", alert.alert_id or "alert") + ".jpg"


class PushDelivery(Delivery):
    """Sends each alert (started and cleared) to every ``--notify`` URL."""

    name: ClassVar[str] = "push"

    def __init__(self, targets: list[Target]) -> None:
        super().__init__()
        self.targets = targets
        self.scratch = tempfile.TemporaryDirectory(prefix="onlooker-push-")  # the snapshot while it is sent

    @classmethod
    def from_settings(cls, settings: Settings) -> PushDelivery | None:
        if not settings.notify:
            return None
        return cls([make_target(url, number) for number, url in enumerate(settings.notify, 1)])

    def parcels(self, event: Event) -> list[Push]:
        return [Push(event, list(self.targets))] if isinstance(event, Alert) else []

    def send(self, parcel: Push) -> None:
        failed = [(target, why) for target in parcel.waiting if (why := self._notify(target, parcel.alert))]
        parcel.waiting = [target for target, _ in failed]
        if failed:
            raise DeliveryError("; ".join(f"{target.shown}: {why}" for target, why in failed))

    def ended(self) -> None:
        super().ended()
        self.scratch.cleanup()

    def _notify(self, target: Target, alert: Alert) -> str:
        """Send one alert to one service; "" when it was delivered, else Apprise's reason."""
        picture = Path(self.scratch.name) / attachment_name(alert) if alert.jpeg else None
        if picture is not None:
            picture.write_bytes(alert.jpeg)
        try:
            with target.apprise.notify(
                body=alert_body(alert),
                title=alert_title(alert),
                notify_type=apprise.NotifyType.WARNING if alert.state == "started" else apprise.NotifyType.SUCCESS,
                body_format=apprise.NotifyFormat.TEXT,
                attach=str(picture) if picture is not None else None,
                timeout=SEND_TIMEOUT,
            ) as result:
                if result:
                    return ""
                reasons = [entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR")]
                return reasons[-1] if reasons else f"not delivered ({result.status.name.lower()})"
        finally:
            if picture is not None:
                picture.unlink(missing_ok=True)
