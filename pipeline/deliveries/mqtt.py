"""Alerts and comments to an MQTT broker (``--mqtt``), announced to Home Assistant by MQTT discovery.

Every message goes with QoS 1, and a parcel leaves the outbox only when the broker has acknowledged it, so
a broker that restarts mid-run loses nothing: paho resends what was in flight when the connection dropped
(the parcel stays at the head of the outbox until that copy is acknowledged, instead of being published
again), and what was not yet published waits in the outbox while the base backs off and says
retrying/down. QoS 1 is "at least once": a connection lost in the instant of a publish can bring a copy. Paho's
own thread (``loop_start``) connects in the background and keeps reconnecting, so a broker that is down at
start is a status, never an error. At each connect the delivery says "online" (retained) on the
availability topic, whose last will says "offline", announces every camera and rule it knows to Home
Assistant, and listens for Home Assistant's own "online" to announce them again after it restarts. States,
snapshots and the last comment are retained, so Home Assistant shows them as soon as it subscribes; the
alert JSON and the event are news, not state, and are not. The topic layout: ``mqtt_discovery.Topics``.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.deliveries.base import Delivery, DeliveryError
from pipeline.deliveries.mqtt_discovery import (
    OFFLINE,
    ONLINE,
    SENSOR_STATE_MAX,
    STATE_OFF,
    STATE_ON,
    Discovery,
    Topics,
)
from pipeline.deliveries.payload import alert_payload, compact_json
from pipeline.errors import ConfigError
from pipeline.events import Alert, CameraStarted, CameraTag, CommentaryFinished, Event, RuleCheck
from pipeline.sources.urls import mask_url
from pipeline.watch.rules import gather_rules

if TYPE_CHECKING:
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    from pipeline.config import Settings

log = logging.getLogger(__name__)

SEND_TIMEOUT = 3.0  # seconds the consumer's thread waits for the broker to acknowledge one message
GOODBYE_TIMEOUT = 1.0  # at the end: how long "offline" may take to be acknowledged before disconnecting
CONNECT_GRACE = 10.0  # a first connect that has said nothing for this long counts as failing
KEEPALIVE = 30  # seconds: a broker that vanished without closing the connection is noticed within ~45 s
NO_CAMERA = CameraTag("camera", "Camera")  # for an event that names no camera (every camera's events do)


@dataclass(frozen=True)
class Broker:
    """Where ``--mqtt`` points: the host, the port, TLS or not, and the login (URL-decoded)."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def parse_broker(url: str) -> Broker:
    """``mqtt://user:pass@host:1883`` or ``mqtts://`` (TLS, port 8883 by default) as a ``Broker``; anything
    else is a ConfigError that says what is expected (the password masked)."""
    shown = mask_url(url)
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ConfigError(f"--mqtt {shown}: the port must be a number from 1 to 65535") from None
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"--mqtt {shown}: say mqtt://host:1883, or mqtts://host:8883 for TLS")
    if not parts.hostname:
        raise ConfigError(f"--mqtt {shown}: no broker host; say mqtt://host:1883")
    if port == 0:
        raise ConfigError(f"--mqtt {shown}: the port must be a number from 1 to 65535")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"--mqtt {shown}: the URL names only the broker; set the base topic with --mqtt-topic")
    tls = scheme == "mqtts"
    return Broker(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def clean_topic(topic: str, flag: str) -> str:
    """A base topic or prefix without slashes at its ends; wildcards cannot be published to."""
    topic = topic.strip().strip("/")
    if not topic or "#" in topic or "+" in topic:
        raise ConfigError(f"{flag} {topic!r}: a topic without # or + (e.g. onlooker)")
    return topic


class ClientIds:
    """The MQTT client ids in use in this process. A broker drops a client when another connects with the
    same id, so sessions that run at once (two tabs of the web page) take ``onlooker-host``,
    ``onlooker-host-2``...; one session alone keeps the plain id, the same on every run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, str] = {}  # client id → the availability topic (with its broker) it speaks for

    def claim(self, stem: str, availability: str) -> str:
        with self._lock:
            client_id, number = stem, 1
            while client_id in self._held:
                number += 1
                client_id = f"{stem}-{number}"
            self._held[client_id] = availability
            return client_id

    def release(self, client_id: str) -> bool:
        """Give the id back; True when no other client here still says "online" on the same topic (only the
        last one may say "offline")."""
        with self._lock:
            availability = self._held.pop(client_id, None)
            return availability not in self._held.values()


CLIENT_IDS = ClientIds()


def client_stem() -> str:
    """``onlooker-<host>``: the same on every run on this machine, so the broker's logs read plainly."""
    host = re.sub(r"[^a-z0-9]+", "-", socket.gethostname().lower()).strip("-")
    return f"onlooker-{host or 'host'}"


@dataclass(frozen=True)
class Message:
    """One parcel: a publish with QoS 1 (``retain`` for states, snapshots and configs)."""

    topic: str
    payload: bytes
    retain: bool = False


class MqttDelivery(Delivery):
    """Publishes each alert (state, JSON, event, snapshot) and each kept comment of every camera."""

    name: ClassVar[str] = "mqtt"
    # a rule's first check announces it (rules added on the page while the session runs included)
    wants: ClassVar[tuple[type[Event], ...]] = (Alert, CameraStarted, CommentaryFinished, RuleCheck)

    def __init__(
        self,
        broker: Broker,
        base: str = "onlooker",
        discovery_prefix: str = "homeassistant",
        rules: Mapping[str, str] | None = None,
    ) -> None:
        """``rules``: name → words of the rules every camera is watched for (announced for each camera as it
        starts); rules that only show up in alerts are announced when they first do."""
        super().__init__()
        self.broker = broker
        self.topics = Topics(base)
        self.discovery = Discovery(discovery_prefix, self.topics) if discovery_prefix else None
        self._rules = dict(rules or {})
        self._known: dict[str, tuple[CameraTag, dict[str, str]]] = {}  # camera id → camera, its rules' words
        self._lock = threading.Lock()  # ``_known``: paho's thread reads it at each connect
        self._pending: tuple[Message, mqtt.MQTTMessageInfo] | None = None  # published, not yet acknowledged
        self._problem = "still connecting"  # why nothing can be sent ("" while connected)
        self._settled = threading.Event()  # the first connect succeeded or failed
        self._started_at = 0.0
        self._closing = False
        self.client_id = CLIENT_IDS.claim(client_stem(), f"{broker.where}/{self.topics.availability}")
        self.client = self._make_client()

    @classmethod
    def from_settings(cls, settings: Settings) -> MqttDelivery | None:
        if not settings.mqtt:
            return None
        broker = parse_broker(settings.mqtt)
        base = clean_topic(settings.mqtt_topic, "--mqtt-topic")
        prefix = clean_topic(settings.mqtt_discovery, "--mqtt-discovery") if settings.mqtt_discovery.strip() else ""
        rules = gather_rules(settings.watch, [], settings.rule_defaults())
        return cls(broker, base, prefix, {rule.name: rule.text for rule in rules})

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id)
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            client.tls_set()  # the system's CA certificates, host name checked
        client.will_set(self.topics.availability, OFFLINE, qos=1, retain=True)
        # paho annotates the delays as int; it waits any float
        client.reconnect_delay_set(min_delay=0.5, max_delay=10)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    # --- the consumer ---
    def start(self) -> None:
        self._started_at = time.monotonic()
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=KEEPALIVE)
        self.client.loop_start()
        super().start()

    def handle(self, event: Event) -> None:
        if isinstance(event, CommentaryFinished) and _kept(event):
            self._forget_queued_comments(event.camera or NO_CAMERA)
        super().handle(event)

    def ended(self) -> None:
        """Count what could not be sent, say "offline" (unless another session here still runs on the same
        topic), disconnect cleanly (so the will is not sent) and join paho's thread."""
        super().ended()
        last = CLIENT_IDS.release(self.client_id)
        self._closing = True
        if last and self.client.is_connected():
            info = self.client.publish(self.topics.availability, OFFLINE, qos=1, retain=True)
            with suppress(ValueError, RuntimeError):
                info.wait_for_publish(GOODBYE_TIMEOUT)
        self.client.disconnect()
        self.client.loop_stop()

    # --- the delivery ---
    def parcels(self, event: Event) -> list[Message]:
        camera = event.camera or NO_CAMERA
        if isinstance(event, Alert):
            return self._learn(camera, event.rule, event.text) + self._alert(camera, event)
        if isinstance(event, CommentaryFinished):
            return (self._learn(camera) + self._comment(camera, event)) if _kept(event) else []
        if isinstance(event, RuleCheck):
            return self._learn(camera, event.rule, event.text or event.rule)  # a rule added on the page: met here first
        return self._learn(camera)

    def ready(self) -> bool:
        """Not before the first connect has succeeded or failed (a client still connecting is no failure);
        after that always, so that a send while the broker is away fails and the base backs off."""
        return self._settled.is_set() or time.monotonic() - self._started_at > CONNECT_GRACE

    def send(self, parcel: Message) -> None:
        pending = self._pending
        if pending is None or pending[0] is not parcel:
            if not self.client.is_connected():
                raise DeliveryError(self._not_connected())
            info = self.client.publish(parcel.topic, parcel.payload, qos=1, retain=parcel.retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:  # the connection dropped just now: paho sends it on reconnect
                raise DeliveryError(f"MQTT broker {self.broker.where}: {mqtt.error_string(info.rc)}")
            pending = self._pending = (parcel, info)
        info = pending[1]
        if not info.is_published() and self.client.is_connected():
            info.wait_for_publish(SEND_TIMEOUT)
        if not info.is_published():
            why = f"no acknowledgement within {SEND_TIMEOUT:.0f} s" if self.client.is_connected() else ""
            raise DeliveryError(f"MQTT broker {self.broker.where}: {why}" if why else self._not_connected())
        self._pending = None

    def _not_connected(self) -> str:
        return f"MQTT broker {self.broker.where}: {self._problem or 'not connected'}"

    # --- what is published ---
    def _alert(self, camera: CameraTag, alert: Alert) -> list[Message]:
        """The snapshot first (an automation that the state starts finds the new picture), then the JSON
        (without the base64 snapshot, to keep messages small), the event and the retained state."""

        def topic(leaf: str) -> str:
            return self.topics.rule(camera.id, alert.rule, leaf)

        started = alert.state == "started"
        data = alert_payload(alert, snapshot=False)
        parcels = [Message(topic("snapshot"), alert.jpeg, retain=True)] if started and alert.jpeg else []
        return [
            *parcels,
            Message(topic("alert"), compact_json(data)),
            Message(topic("event"), compact_json({"event_type": alert.state, **data})),
            Message(topic("state"), (STATE_ON if started else STATE_OFF).encode(), retain=True),
        ]

    def _comment(self, camera: CameraTag, comment: CommentaryFinished) -> list[Message]:
        """The attributes first (the whole text), then the state Home Assistant shows (at most 255 characters)."""
        text = comment.text.strip()
        state = text if len(text) <= SENSOR_STATE_MAX else text[: SENSOR_STATE_MAX - 1].rstrip() + "…"
        attributes = {"text": text, "comment_id": comment.comment_id, "media_time": round(comment.t, 3)}
        return [
            Message(self.topics.comment_attributes(camera.id), compact_json(attributes), retain=True),
            Message(self.topics.comment(camera.id), state.encode(), retain=True),
        ]

    def _forget_queued_comments(self, camera: CameraTag) -> None:
        """A newer comment replaces the camera's queued ones: while the broker is away, comments must not push
        alerts out of the bounded outbox. The head stays (it may be in flight)."""
        stale = {self.topics.comment(camera.id), self.topics.comment_attributes(camera.id)}
        if len(self.outbox) > 1:
            head, *rest = self.outbox
            self.outbox.clear()
            self.outbox.extend([head, *(parcel for parcel in rest if parcel.topic not in stale)])

    # --- Home Assistant discovery ---
    def _learn(self, camera: CameraTag, rule: str = "", text: str = "") -> list[Message]:
        """Remember a camera (with the run's rules) or a rule seen on it: the configs of what is new, and for a
        new camera its rules' states OFF (no alert is on yet: an ON retained by a run that crashed goes)."""
        with self._lock:
            configs: list[tuple[str, dict[str, Any]]] = []
            states: list[Message] = []
            if camera.id not in self._known:
                self._known[camera.id] = (camera, dict(self._rules))
                configs += self._configs(camera, self._rules)
                states += [
                    Message(self.topics.rule(camera.id, name, "state"), STATE_OFF.encode(), True)
                    for name in self._rules
                ]
            rules = self._known[camera.id][1]
            if rule and (rule not in rules or rules[rule] == rule != text):  # new, or its words arrived
                rules[rule] = text
                configs += self._configs(camera, {rule: text}, with_camera=False)
        return [Message(topic, compact_json(config), retain=True) for topic, config in configs] + states

    def _configs(
        self, camera: CameraTag, rules: Mapping[str, str], with_camera: bool = True
    ) -> list[tuple[str, dict[str, Any]]]:
        if self.discovery is None:
            return []
        configs = self.discovery.camera(camera) if with_camera else []
        for rule, text in rules.items():
            configs += self.discovery.rule(camera, rule, text)
        return configs

    def _announce(self, client: mqtt.Client) -> None:
        """Every known camera's and rule's config, from paho's thread (at connect, when Home Assistant
        restarts). Not waited for: a connection that drops before they arrive announces them again."""
        with self._lock:
            configs = [config for camera, rules in self._known.values() for config in self._configs(camera, rules)]
        for topic, config in configs:
            client.publish(topic, compact_json(config), qos=1, retain=True)

    # --- paho's callbacks (on paho's thread) ---
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        self._settled.set()
        if reason.is_failure:
            self._say_problem(f"the broker refused the connection: {reason}")
            return
        log.info("%s: connected to %s as %s", self.name, self.broker.where, self.client_id)
        self._problem = ""
        client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
        if self.discovery is not None:
            client.subscribe(self.discovery.status_topic, qos=1)
            self._announce(client)
        self.retry_now()

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        self._settled.set()
        self._say_problem("cannot connect (is the broker running, and is the host and port right?)")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if not self._closing and not self._problem:  # a refused connect has said why already
            self._say_problem(f"lost the connection ({reason}); reconnecting")

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if self.discovery is not None and message.topic == self.discovery.status_topic and message.payload == b"online":
            log.info("%s: Home Assistant is online; announcing the cameras again", self.name)
            self._announce(client)

    def _say_problem(self, problem: str) -> None:
        """Keep why nothing can be sent (for the status), and log it once, not at every reconnect try."""
        if problem != self._problem:
            log.warning("%s: MQTT broker %s: %s", self.name, self.broker.where, problem)
        self._problem = problem


def _kept(comment: CommentaryFinished) -> bool:
    return not comment.suppressed and bool(comment.text.strip())
