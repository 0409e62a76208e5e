"""A real MQTT broker for tests (Mosquitto on loopback, owned by the test) and a real subscriber.

``Mosquitto`` writes a small config into a folder of the test's (``listener PORT 127.0.0.1``, no persistence,
anonymous clients allowed, or with ``users`` a password file made by ``mosquitto_passwd -b`` and nobody
else), starts ``/usr/sbin/mosquitto -c`` on a free port and waits until it answers an MQTT CONNECT (polled
with a deadline). ``kill()`` SIGKILLs it (a broker that dies) and ``start()`` again brings it back on the same
port, empty: nothing was persisted. ``set_users()`` rewrites the password file and SIGHUPs the broker, which
reloads it; a test uses it to hold one client off until another is listening again.

``Subscriber`` is a paho client that records every message on its topics and subscribes again after each
reconnect; a test waits for what it expects with a deadline, never a sleep.

Timings on the dev machine: start to the first CONNACK 20-30 ms (with a password file ~45 ms: hashing).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers.mjpeg_server import free_port

MOSQUITTO = Path("/usr/sbin/mosquitto")
STARTUP_TIMEOUT_S = 10.0


def missing_mosquitto_reason(passwords: bool = False) -> str | None:
    """Why no broker (with ``passwords``: one with logins) can be started here, for ``pytest.mark.skipif``."""
    if not MOSQUITTO.is_file():
        return f"{MOSQUITTO} is missing: install the Debian package mosquitto (scripts/setup.sh --dev)"
    if passwords and _mosquitto_passwd() is None:
        return "mosquitto_passwd is missing (it comes with the Debian package mosquitto)"
    return None


def _mosquitto_passwd() -> str | None:
    fallback = Path("/usr/bin/mosquitto_passwd")  # where Debian puts it, should PATH not have /usr/bin
    return shutil.which("mosquitto_passwd") or (str(fallback) if fallback.is_file() else None)


class Mosquitto:
    """``mosquitto -c folder/mosquitto.conf`` on 127.0.0.1; ``users`` (name → password) turns logins on."""

    def __init__(self, folder: Path, users: Mapping[str, str] | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.users = dict(users) if users is not None else None
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.folder / "mosquitto.log"

    def url(self, user: str | None = None) -> str:
        """The broker's URL, with ``user`` and their password (URL-encoded) when given."""
        login = f"{quote(user, safe='')}:{quote(self.users[user], safe='')}@" if user is not None and self.users else ""
        return f"mqtt://{login}127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        """Start (or start again, on the same port) and wait until it answers; RuntimeError with its log if not."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("mosquitto is already running")
        config = self.folder / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr", "log_type all"]
        # Mosquitto started as root drops to the user "mosquitto", who cannot read the test's folder.
        lines += ["user root"] if os.geteuid() == 0 else []
        if self.users is None:
            lines.append("allow_anonymous true")
        else:
            self._write_passwords()
            lines += ["allow_anonymous false", f"password_file {self.folder / 'passwords'}"]
        config.write_text("\n".join(lines) + "\n")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(MOSQUITTO), "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self) -> None:
        """Poll with an MQTT CONNECT until the broker answers, or RuntimeError at the deadline."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last = "no answer yet"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if self._answers():
                    return
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.02)  # the next poll; the deadline bounds the wait
        raise RuntimeError(f"mosquitto did not answer on port {self.port} ({last}):\n{self.log_tail()}")

    def _answers(self) -> bool:
        """One CONNECT; True when a CONNACK came back within a second (refused counts: the broker answered)."""
        answered = threading.Event()
        probe = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ready-probe-{self.port}")
        probe.on_connect = lambda *_: answered.set()
        try:
            probe.connect("127.0.0.1", self.port, keepalive=5)
            until = time.monotonic() + 1.0
            while not answered.is_set() and time.monotonic() < until:
                probe.loop(0.05)
            return answered.is_set()
        finally:
            probe.disconnect()  # also closes a socket that got no CONNACK

    def _write_passwords(self) -> None:
        assert self.users is not None
        passwords = self.folder / "passwords"
        passwords.write_text("")
        passwd = _mosquitto_passwd()
        assert passwd is not None, missing_mosquitto_reason(passwords=True)
        for name, password in self.users.items():  # -b: the password as given (-U would split it at a colon)
            subprocess.run([passwd, "-b", str(passwords), name, password], check=True, capture_output=True, timeout=10)

    def set_users(self, users: Mapping[str, str]) -> None:
        """New logins for the running broker: the password file is rewritten and mosquitto reloads it (SIGHUP)."""
        self.users = dict(users)
        self._write_passwords()
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def kill(self) -> None:
        """SIGKILL: the broker dies without a word to its clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.kill()


@dataclass(frozen=True, eq=False)
class Received:
    """One message as the subscriber got it; ``retain`` is set only for what the broker had retained. Compared
    by identity: ``messages.index(m)`` is where that very message came."""

    topic: str
    payload: bytes
    retain: bool
    at: float = field(default_factory=time.monotonic)  # when it arrived, for the alert bench


class Subscriber:
    """A paho client on ``topics`` that keeps every message, in order, and subscribes again on each reconnect."""

    count = 0

    def __init__(
        self,
        broker: Mosquitto,
        topics: tuple[str, ...] = ("#",),
        user: str | None = None,
    ) -> None:
        Subscriber.count += 1
        self.topics = topics
        self.messages: list[Received] = []
        self.subscribed = 0  # SUBACKs so far: one per (re)connect
        self._cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watcher-{Subscriber.count}")
        if user is not None and broker.users:
            self.client.username_pw_set(user, broker.users[user])
        self.client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.port = broker.port

    def start(self, timeout: float = 10.0) -> Subscriber:
        self.client.connect_async("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        self.wait_subscribed(1, timeout)
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        if not getattr(reason, "is_failure", False):
            client.subscribe([(topic, 1) for topic in self.topics])

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, codes: object, props: object) -> None:
        with self._cond:
            self.subscribed += 1
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Received(message.topic, bytes(message.payload), bool(message.retain)))
            self._cond.notify_all()

    def wait_subscribed(self, count: int, timeout: float = 10.0) -> None:
        """Until the ``count``-th SUBACK (after a reconnect: ``subscribed + 1``)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.subscribed >= count, timeout):
                raise AssertionError(f"not subscribed {count} time(s) within {timeout} s")

    def wait_for(self, accepts: Callable[[Received], bool], count: int = 1, timeout: float = 10.0) -> list[Received]:
        """The first ``count`` messages so far (or still to come) that ``accepts``; AssertionError at the deadline."""

        def found() -> list[Received]:
            return [m for m in self.messages if accepts(m)]

        with self._cond:
            if not self._cond.wait_for(lambda: len(found()) >= count, timeout):
                topics = [m.topic for m in self.messages][-20:]
                raise AssertionError(f"{len(found())} of {count} messages within {timeout} s; last topics: {topics}")
            return found()[:count]

    def wait_topic(self, topic: str, payload: bytes | None = None, timeout: float = 10.0) -> Received:
        """The first message on ``topic`` (with ``payload`` when given)."""
        return self.wait_for(lambda m: m.topic == topic and payload in (None, m.payload), timeout=timeout)[0]

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish with QoS 1 and wait for the broker's acknowledgement."""
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5.0)
