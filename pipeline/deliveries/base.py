"""What every alert delivery shares: a consumer with a bounded outbox that it sends from on its own thread.

``handle`` only turns an event into parcels and queues them; the consumer's thread sends the oldest
whenever its retry time has come, backing off (with jitter) while the receiver is down. Commentary never
waits for a delivery: the bus hands events over without blocking, and a send that hangs is cut off by
the delivery's own timeout. While the receiver is away the outbox keeps the newest ``outbox_size``
parcels and counts what it had to drop. The state (ok, retrying, down) and the counts go on the bus as
``DeliveryStatus`` whenever they change, for the status strip, the events file and the bench.
"""

from __future__ import annotations

import logging
import random
import time
from abc import abstractmethod
from collections import deque
from typing import Any, ClassVar

from pipeline.consumers.base import Consumer
from pipeline.events import Alert, DeliveryState, DeliveryStatus, Event

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5  # seconds before the first retry
BACKOFF_MAX = 30.0
DOWN_AFTER = 3  # failed tries in a row after which the receiver is called down


class DeliveryError(Exception):
    """A send failed; ``retry`` False means the parcel can never be delivered (it is dropped, counted)."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class Delivery(Consumer):
    """Subclasses set ``name`` (and ``wants`` when they need more than alerts), and write ``parcels``
    (an event → what to send) and ``send`` (one parcel; raise DeliveryError on failure)."""

    wants: ClassVar[tuple[type[Event], ...]] = (Alert,)
    tick = 0.1
    outbox_size: ClassVar[int] = 100
    drain_seconds: ClassVar[float] = 5.0  # at the end of a session: how long queued parcels are still tried

    def __init__(self) -> None:
        super().__init__()
        self.outbox: deque[Any] = deque()
        self.sent = 0
        self.dropped = 0
        self.failures = 0  # failed tries in a row
        self.state: DeliveryState = "ok"
        self.detail = ""
        self._next_try = 0.0
        self._said: tuple[Any, ...] = ()
        self._t = 0.0

    # --- what a delivery writes ---
    @abstractmethod
    def parcels(self, event: Event) -> list[Any]:
        """What to send for this event (nothing, one message, or several)."""

    @abstractmethod
    def send(self, parcel: Any) -> None:
        """Deliver one parcel within the delivery's own timeout; raise DeliveryError when it did not arrive."""

    def ready(self) -> bool:
        """Whether sending can be tried now (a client still connecting is not a failure)."""
        return True

    def retry_now(self) -> None:
        """The receiver is back (a client reconnected): the outbox goes at the next tick, not when the backoff
        that the outage built up ends. Any thread."""
        self._next_try = 0.0

    # --- the consumer's hooks ---
    def handle(self, event: Event) -> None:
        self._t = event.t
        for parcel in self.parcels(event):
            if len(self.outbox) >= self.outbox_size:
                self.outbox.popleft()
                self.dropped += 1
            self.outbox.append(parcel)
        self._send_due()

    def idle(self) -> None:
        self._send_due()

    def drain(self) -> None:
        """The session ended: keep trying what is queued for ``drain_seconds``, then say what was lost."""
        deadline = time.monotonic() + self.drain_seconds
        while self.outbox and time.monotonic() < deadline and not self.stopping:
            self._send_due()
            if self.outbox:
                time.sleep(min(max(self._next_try - time.monotonic(), 0.02), 0.2))
        self._lost_at_end()

    def ended(self) -> None:
        self._lost_at_end()

    # --- sending ---
    def _send_due(self) -> None:
        while self.outbox and time.monotonic() >= self._next_try and self.ready() and not self.stopping:
            parcel = self.outbox[0]
            try:
                self.send(parcel)
            except DeliveryError as exc:
                if not exc.retry:
                    self.outbox.popleft()
                    self.dropped += 1
                    self._status(self.state, str(exc))
                    continue
                self.failures += 1
                wait = min(BACKOFF_FIRST * 2 ** (self.failures - 1), BACKOFF_MAX) * (0.75 + random.random() / 2)
                self._next_try = time.monotonic() + wait
                self._status("down" if self.failures >= DOWN_AFTER else "retrying", f"{exc}; next try in {wait:.0f} s")
                return
            self.outbox.popleft()
            self.sent += 1
            self.failures = 0
            self._status("ok", "")

    def _status(self, state: DeliveryState, detail: str) -> None:
        """Say the state on the bus when it (or a count) changed."""
        self.state, self.detail = state, detail
        said = (state, detail, self.sent, len(self.outbox), self.dropped)
        if said == self._said:
            return
        self._said = said
        if state != "ok":
            log.warning("%s: %s", self.name, detail)
        self.publish(
            DeliveryStatus(
                t=self._t,
                name=self.name,
                state=state,
                sent=self.sent,
                queued=len(self.outbox),
                dropped=self.dropped,
                detail=detail,
            )
        )

    def _lost_at_end(self) -> None:
        if self.outbox:
            log.warning("%s: %d alert message(s) not delivered when the session ended", self.name, len(self.outbox))
            self.dropped += len(self.outbox)
            self.outbox.clear()
