"""SIGTERM and SIGINT as a request to stop cleanly: what ``docker stop``, systemd and Ctrl-C send.

Left to Python, SIGTERM ends the process where it stands: the recording stays ``interrupted`` and the
narration WAV and the export are never written. Here the first signal stops the run the way its front end
stops (headless: as Ctrl-C always did; the web app: every tab's session, then the server) and the process
exits 0 once everything is finished. A container gets 10 s before SIGKILL, and someone who presses Ctrl-C
twice means it: a second signal while stopping quits at once, with the shell's code for it (128 + the
signal's number: 130 for SIGINT, 143 for SIGTERM).

Signal handlers belong to the process and only the main thread can set them, so there is one state per
process: ``stop_signals`` installs it around a whole run (``app.py``). Inside it the first signal raises
``Stopped`` in the main thread, a KeyboardInterrupt, so code that already unwinds cleanly on Ctrl-C does the
same on SIGTERM; ``on_stop`` replaces that for a main thread that waits in a loop it does not own (Gradio's
``block_thread`` swallows KeyboardInterrupt and closes the server before the sessions); ``finishing`` says
the run is already ending on its own, so a first signal must not cut its clean-up short.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(KeyboardInterrupt):
    """The first SIGTERM or SIGINT, raised in the main thread; ``signame`` says which."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


def say(line: str) -> None:
    """A note straight to file descriptor 2: a handler can interrupt the main thread in the middle of a write to
    ``sys.stderr``, and writing to the same buffered stream from the handler would then raise (reentrant call)."""
    with contextlib.suppress(OSError):
        os.write(2, f"{line}\n".encode())


class StopState:
    """What the next stop signal does; one per process, while ``stop_signals`` is in force."""

    def __init__(self) -> None:
        self.received: str | None = None  # the first signal's name, once one came
        self.action: Callable[[], None] | None = None
        self.finishing = False

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            say(f"· {name} while stopping: quitting now")
            os._exit(128 + signum)  # no clean-up on purpose: that is what the first signal is waiting for
        self.received = name
        if self.action is not None:
            say(f"· stopped ({name})")
            self.action()
        elif self.finishing:
            say(f"· {name}: finishing already; a second one quits at once")
        else:
            raise Stopped(name)


_state: StopState | None = None


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM and SIGINT stop the run cleanly while inside; the handlers before are put back after. Off the main
    thread nothing changes: only the main thread can set handlers, and Python runs them there."""
    global _state
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    state = StopState()
    before = {number: signal.signal(number, state.handle) for number in STOP_SIGNALS}
    _state = state
    try:
        yield
    finally:
        _state = None
        for number, handler in before.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def on_stop(action: Callable[[], None]) -> Iterator[None]:
    """While inside, the first signal runs ``action`` instead of raising ``Stopped``. It runs in the handler, on the
    main thread, so the main thread must be waiting (holding no lock) all the while; a second signal during it
    quits at once. After it the run is on its way out (``finishing``), however the wait ended."""
    state = _state
    if state is None:
        yield
        return
    state.action = action
    try:
        yield
    finally:
        state.action = None
        state.finishing = True


def finishing() -> None:
    """The run is ending on its own (its source ended): from here a first signal is only noted, since stopping
    could not be quicker than the clean-up under way; a second one still quits at once."""
    if _state is not None:
        _state.finishing = True
