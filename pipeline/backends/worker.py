"""Run one blocking generation in a worker thread and stream what it emits, safely.

Model libraries generate in a blocking call and hand text (and audio) out through callbacks or
streamers; a streamer whose producer died blocks its reader forever. Here the producer runs in a
thread that holds the model's lock, everything it emits goes through a queue the consumer polls
with a short timeout, its exception is re-raised in the consumer, cancellation and the consumer
leaving both tell it to stop, and a producer that goes quiet for ``token_timeout`` is an error.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from pipeline.errors import BackendError

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often the consumer re-checks cancel, worker health and the token deadline
_DONE = object()

Produce = Callable[[Callable[[Any], None], Callable[[], bool]], None]


def stream_generation(
    produce: Produce,
    *,
    lock: threading.Lock,
    cancel: threading.Event,
    token_timeout: float,
    what: str,
    thread_name: str,
    first_timeout: float | None = None,
    interrupt: Callable[[], None] | None = None,
    transient_timeouts: bool = False,
) -> Iterator[Any]:
    """Yield what ``produce(emit, should_stop)`` emits, produced in a thread holding ``lock``.

    ``produce`` must return soon after ``should_stop()`` turns true; ``interrupt`` (if given) is
    called when the consumer leaves early, to unblock a producer stuck in I/O (close its stream).
    Waiting for the lock (another session generating) does not count toward the timeouts; the first
    item may take ``first_timeout`` (default ``token_timeout``), each later one ``token_timeout``;
    ``transient_timeouts`` marks a timeout as the engine being away for now (a remote server), not
    broken. A BackendError raised by ``produce`` reaches the consumer as it is.
    """
    items: queue.Queue[Any] = queue.Queue()
    left = threading.Event()  # the consumer is gone, for whatever reason
    started = threading.Event()  # the worker holds the lock
    failure: list[BaseException] = []

    def should_stop() -> bool:
        return left.is_set() or cancel.is_set()

    def work() -> None:
        try:
            while not lock.acquire(timeout=POLL_S):
                if should_stop():
                    return
            try:
                if should_stop():
                    return
                started.set()
                produce(items.put, should_stop)
            finally:
                lock.release()
        except BaseException as exc:
            failure.append(exc)
        finally:
            items.put(_DONE)  # never leave the consumer waiting

    worker = threading.Thread(target=work, name=thread_name, daemon=True)
    worker.start()
    finished = False
    try:
        last = time.perf_counter()
        limit, first = (token_timeout if first_timeout is None else first_timeout), True
        while not cancel.is_set():
            wait = POLL_S if not started.is_set() else min(POLL_S, max(limit - (time.perf_counter() - last), 0.0))
            try:
                item = items.get(timeout=max(wait, 0.001))  # never wait past the deadline
            except queue.Empty:
                if not started.is_set():
                    last = time.perf_counter()
                elif time.perf_counter() - last > limit:
                    setting = "first-token" if first and first_timeout is not None else "token"
                    raise BackendError(
                        f"{what} produced no token for {limit:g} s "
                        f"(--{setting}-timeout / ONLOOKER_{setting.replace('-', '_').upper()}_TIMEOUT)",
                        transient=transient_timeouts,
                    ) from None
                continue
            if item is _DONE:
                finished = True
                break
            last, limit, first = time.perf_counter(), token_timeout, False
            yield item
        if failure:
            exc = failure[0]
            if isinstance(exc, BackendError):
                raise exc
            raise BackendError(f"{what} failed while generating: {type(exc).__name__}: {exc}") from exc
    finally:
        left.set()
        if not finished and interrupt is not None:
            interrupt()
        worker.join(timeout=token_timeout)
        if worker.is_alive():
            log.warning("%s still running %.0f s after being told to stop", thread_name, token_timeout)
