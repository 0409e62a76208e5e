"""The MQTT delivery against a real Mosquitto on loopback, driven through a real ``EventBus``: Home
Assistant's discovery configs, an alert's and a comment's topics, the last will, a broker that is down at
start or killed mid-run, Home Assistant coming back online, and the URLs ``--mqtt`` refuses.

A real paho subscriber (``tests/helpers/mosquitto.py``) sees what the broker forwards; a second one that
subscribes later sees only what the broker retained. Every wait has a deadline; none is a sleep.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.deliveries.mqtt import Message, MqttDelivery, parse_broker
from pipeline.errors import ConfigError
from pipeline.events import (
    Alert,
    CameraStarted,
    CameraTag,
    CommentaryFinished,
    DeliveryStatus,
    RuleCheck,
)
from tests.helpers.mjpeg_server import free_port
from tests.helpers.mosquitto import Mosquitto, Received, Subscriber, missing_mosquitto_reason
from tests.helpers.webhook_receiver import DeliveryRun

needs_broker = pytest.mark.skipif(missing_mosquitto_reason() is not None, reason=missing_mosquitto_reason() or "")
needs_logins = pytest.mark.skipif(
    missing_mosquitto_reason(passwords=True) is not None, reason=missing_mosquitto_reason(passwords=True) or ""
)

FRONT = CameraTag("front-door", "Front door")
DOOR = "a person at the door"
NODE = "onlooker_front-door"
AVAILABILITY = "onlooker/availability"
ENTITIES = {
    f"homeassistant/{component}/{NODE}/{object_id}/config": component
    for component, object_id in [("sensor", "comment"), ("binary_sensor", "door"), ("event", "door"), ("image", "door")]
}


def small_jpeg() -> bytes:
    picture = np.zeros((48, 64, 3), np.uint8)
    picture[10:30, 20:40] = (30, 120, 200)
    ok, encoded = cv2.imencode(".jpg", picture)
    assert ok
    return encoded.tobytes()


def alert(state: str, rule: str = "door", alert_id: str = "a1", jpeg: bytes = b"") -> Alert:
    return Alert(
        t=12.5,
        camera=FRONT,
        alert_id=alert_id,
        rule=rule,
        text=DOOR if rule == "door" else f"{rule} happens",
        state=state,  # type: ignore[arg-type]
        confidence=0.9,
        reason="someone in a red coat stands at the door",
        snapshot=f"alerts/{alert_id}.jpg" if jpeg else "",
        jpeg=jpeg,
    )


def camera_started() -> CameraStarted:
    return CameraStarted(
        t=0.0,
        camera=FRONT,
        source="rtsp://camera.local/front",
        kind="stream",
        profile="security",
        preset="balanced",
        instructions="",
        backend="opencv",
        speaks=False,
    )


class Run(DeliveryRun):
    """The delivery on a real bus (``DeliveryRun``), waiting longer for a status (a broker restarts), and ending
    with paho's thread gone."""

    def wait_status(self, check: Callable[[DeliveryStatus], bool], timeout: float = 15.0) -> DeliveryStatus:
        return super().wait_status(check, timeout)

    def finish(self) -> None:
        """The session ends: the bus closes, the delivery drains and ends, and paho's thread is gone."""
        self.close()
        assert isinstance(self.delivery, MqttDelivery)
        paho_thread = f"paho-mqtt-client-{self.delivery.client_id}"
        assert paho_thread not in {thread.name for thread in threading.enumerate()}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as running:
        yield running


@pytest.fixture
def watcher(broker: Mosquitto) -> Iterator[Subscriber]:
    with Subscriber(broker) as subscriber:
        yield subscriber


def retained(broker: Mosquitto, topics: set[str], under: str) -> dict[str, Received]:
    """What a client that subscribes now to ``under`` gets of ``topics``: the broker's retained messages (a
    marker published after the subscription comes after every one of them)."""
    with Subscriber(broker, topics=(under, "test/marker")) as late:
        late.publish("test/marker", b"end")
        late.wait_topic("test/marker")
        return {m.topic: m for m in late.messages if m.topic in topics}


@needs_broker
def test_discovery_configs_are_retained_for_each_entity(broker: Mosquitto, watcher: Subscriber) -> None:
    run = Run(MqttDelivery.from_settings(Settings(mqtt=broker.url(), watch=[f"door={DOOR}"])))
    run.publish(camera_started())
    watcher.wait_topic(AVAILABILITY, b"online")
    for topic in ENTITIES:
        watcher.wait_topic(topic)

    state = "onlooker/front-door/door/state"
    watcher.wait_topic(state, b"OFF")  # no alert is on when a camera starts
    kept = retained(broker, {*ENTITIES, AVAILABILITY, state}, "#")
    assert set(kept) == {*ENTITIES, AVAILABILITY, state} and all(m.retain for m in kept.values())
    assert (kept[AVAILABILITY].payload, kept[state].payload) == (b"online", b"OFF")
    configs = {ENTITIES[topic]: json.loads(kept[topic].payload) for topic in ENTITIES}
    for config in configs.values():
        assert config["availability_topic"] == AVAILABILITY
        assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
        assert config["device"] == {"identifiers": [NODE], "name": "Front door", "manufacturer": "Onlooker"}
        assert config["qos"] == 1
    assert len({config["unique_id"] for config in configs.values()}) == 4
    binary, event, image, sensor = (configs[c] for c in ("binary_sensor", "event", "image", "sensor"))
    assert binary["name"] == "A person at the door"
    assert binary["state_topic"] == "onlooker/front-door/door/state"
    assert (binary["payload_on"], binary["payload_off"]) == ("ON", "OFF")
    assert event["state_topic"] == "onlooker/front-door/door/event"
    assert event["event_types"] == ["started", "cleared"]
    assert image["image_topic"] == "onlooker/front-door/door/snapshot"
    assert image["content_type"] == "image/jpeg"
    assert sensor["state_topic"] == "onlooker/front-door/comment"
    assert sensor["json_attributes_topic"] == "onlooker/front-door/comment/attributes"

    run.finish()
    assert watcher.wait_topic(AVAILABILITY, b"offline")
    assert retained(broker, {AVAILABILITY}, AVAILABILITY)[AVAILABILITY].payload == b"offline"


@needs_broker
def test_an_alert_sets_the_state_and_sends_its_json_event_and_snapshot(broker: Mosquitto, watcher: Subscriber) -> None:
    jpeg = small_jpeg()
    run = Run(MqttDelivery(parse_broker(broker.url()), rules={"door": DOOR}))
    run.publish(alert("started", jpeg=jpeg))
    run.publish(alert("cleared"))

    prefix = "onlooker/front-door/door"
    states = watcher.wait_for(lambda m: m.topic == f"{prefix}/state", count=3)
    assert [m.payload for m in states] == [b"OFF", b"ON", b"OFF"]  # OFF as the camera is first seen
    started, cleared = (json.loads(m.payload) for m in watcher.wait_for(lambda m: m.topic == f"{prefix}/alert", 2))
    assert started["version"] == 1 and started["type"] == "alert"
    assert (started["id"], started["rule"], started["text"], started["state"]) == ("a1", "door", DOOR, "started")
    assert started["camera"] == {"id": "front-door", "name": "Front door"}
    assert (started["confidence"], started["media_time"]) == (0.9, 12.5)
    assert started["reason"] == "someone in a red coat stands at the door"
    assert started["time"].endswith("Z")
    assert started["recording"] == {"snapshot": "alerts/a1.jpg", "clip": None}
    assert started["snapshot"] is None  # the picture has a topic of its own
    assert cleared["state"] == "cleared"
    events = [json.loads(m.payload) for m in watcher.wait_for(lambda m: m.topic == f"{prefix}/event", count=2)]
    assert [e["event_type"] for e in events] == ["started", "cleared"]
    assert events[0]["reason"] == started["reason"]
    snapshot = watcher.wait_topic(f"{prefix}/snapshot")
    assert snapshot.payload == jpeg
    assert watcher.messages.index(snapshot) < watcher.messages.index(states[1])  # the picture is there first

    kept = retained(broker, {f"{prefix}/{leaf}" for leaf in ("state", "snapshot", "alert", "event")}, f"{prefix}/#")
    assert set(kept) == {f"{prefix}/state", f"{prefix}/snapshot"}  # news is not retained
    assert kept[f"{prefix}/state"].payload == b"OFF" and kept[f"{prefix}/snapshot"].payload == jpeg

    last = run.wait_status(lambda s: s.sent == 12)  # 4 discovery configs, the state OFF, 4 + 3 alert messages
    assert (last.state, last.queued, last.dropped) == ("ok", 0, 0)
    run.finish()


@needs_broker
def test_the_last_will_says_offline_when_the_connection_breaks(broker: Mosquitto, watcher: Subscriber) -> None:
    run = Run(MqttDelivery(parse_broker(broker.url()), discovery_prefix=""))
    watcher.wait_topic(AVAILABILITY, b"online")
    watcher.clear()
    run.delivery.client.socket().shutdown(socket.SHUT_RDWR)  # gone without a DISCONNECT: the broker sends the will

    offline = watcher.wait_topic(AVAILABILITY, b"offline")
    online = watcher.wait_topic(AVAILABILITY, b"online")  # paho reconnects and says so
    assert watcher.messages.index(offline) < watcher.messages.index(online)
    run.finish()


@needs_logins
def test_alerts_sent_while_the_broker_is_down_all_arrive_after_it_restarts(tmp_path: Path) -> None:
    users = {"onlooker": "p@ss w:rd", "watcher": "w"}  # the delivery's login is URL-encoded, and decoded again
    with Mosquitto(tmp_path / "broker", users=users) as broker, Subscriber(broker, user="watcher") as watcher:
        run = Run(MqttDelivery(parse_broker(broker.url("onlooker")), discovery_prefix=""))
        run.publish(alert("started"))
        watcher.wait_topic("onlooker/front-door/door/alert")
        subscriptions = watcher.subscribed

        broker.kill()
        for n in (2, 3, 4):
            run.publish(alert("started", rule=f"rule-{n}", alert_id=f"a{n}"))
        run.wait_status(lambda s: s.state in ("retrying", "down") and s.queued > 0)
        # Back without the delivery's login until the watcher listens again: the alerts are not retained, and
        # one published before it resubscribed would be missed by the test, not lost by the delivery.
        broker.users = {"watcher": users["watcher"]}
        broker.start()
        watcher.wait_subscribed(subscriptions + 1)
        broker.set_users(users)

        arrived = watcher.wait_for(lambda m: m.topic.endswith("/alert") and b'"a1"' not in m.payload, count=3)
        assert {json.loads(m.payload)["id"] for m in arrived} == {"a2", "a3", "a4"}
        assert {m.payload for m in watcher.wait_for(lambda m: m.topic.endswith("/state"), count=4)} == {b"ON"}
        recovered = run.wait_status(lambda s: s.state == "ok" and s.queued == 0 and s.sent == 12)  # 4 alerts × 3
        assert recovered.dropped == 0
        run.finish()
        assert run.delivery.dropped == 0


@needs_broker
def test_home_assistant_coming_online_gets_every_config_again(broker: Mosquitto, watcher: Subscriber) -> None:
    run = Run(MqttDelivery(parse_broker(broker.url()), rules={"door": DOOR}))
    run.publish(camera_started())
    run.wait_status(lambda s: s.sent == 5 and s.queued == 0)  # acknowledged: already forwarded to the watcher
    for topic in ENTITIES:
        watcher.wait_topic(topic)

    watcher.publish("homeassistant/status", b"online")
    echo = watcher.wait_topic("homeassistant/status")  # what the watcher got before this was sent before it

    def announced_again(message: Received) -> bool:
        return message.topic in ENTITIES and watcher.messages.index(message) > watcher.messages.index(echo)

    again = watcher.wait_for(announced_again, count=len(ENTITIES))
    assert {m.topic for m in again} == set(ENTITIES)
    run.finish()


@needs_broker
def test_the_comment_sensor_state_is_cut_and_the_attributes_keep_the_whole_text(
    broker: Mosquitto, watcher: Subscriber
) -> None:
    words = "The courier walks up the path with a parcel under one arm and rings the bell twice. " * 5
    run = Run(MqttDelivery(parse_broker(broker.url()), discovery_prefix=""))
    run.publish(CommentaryFinished(t=3.25, camera=FRONT, comment_id=6, text="a repeat", suppressed="repeat"))
    run.publish(CommentaryFinished(t=4.0, camera=FRONT, comment_id=7, text=words))

    state = watcher.wait_topic("onlooker/front-door/comment").payload.decode()
    assert len(state) <= 255 and state.endswith("…") and words.startswith(state[:-1])
    attributes = json.loads(watcher.wait_topic("onlooker/front-door/comment/attributes").payload)
    assert attributes == {"text": words.strip(), "comment_id": 7, "media_time": 4.0}
    assert not [m for m in watcher.messages if b"a repeat" in m.payload]  # a suppressed comment is not sent
    run.finish()


@needs_broker
def test_a_broker_down_at_start_is_a_status_not_an_error(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")  # its port is chosen, nothing listens yet
    run = Run(MqttDelivery(parse_broker(broker.url()), discovery_prefix=""))
    run.publish(alert("started", jpeg=small_jpeg()))
    down = run.wait_status(lambda s: s.state in ("retrying", "down"))
    assert f"127.0.0.1:{broker.port}" in down.detail and run.delivery.failed is None

    with broker:
        run.wait_status(lambda s: s.state == "ok" and s.queued == 0)
        prefix = "onlooker/front-door/door"
        kept = retained(broker, {f"{prefix}/state", f"{prefix}/snapshot"}, f"{prefix}/#")
        assert kept[f"{prefix}/state"].payload == b"ON" and kept[f"{prefix}/snapshot"].payload == small_jpeg()
        run.finish()


def test_a_newer_comment_replaces_queued_ones_but_never_an_alert() -> None:
    """While the broker is away, comments must not push alerts out of the bounded outbox. Handled on the
    test's thread: the outbox is read without racing the consumer's."""
    delivery = MqttDelivery(parse_broker(f"mqtt://127.0.0.1:{free_port()}"), discovery_prefix="")  # nobody there
    delivery.handle(alert("started"))
    for n in (1, 2, 3):
        delivery.handle(CommentaryFinished(t=float(n), camera=FRONT, comment_id=n, text=f"comment {n}"))

    queued: list[Message] = list(delivery.outbox)
    assert [m.topic for m in queued] == [
        "onlooker/front-door/door/alert",
        "onlooker/front-door/door/event",
        "onlooker/front-door/door/state",
        "onlooker/front-door/comment/attributes",
        "onlooker/front-door/comment",
    ]
    assert queued[-1].payload == b"comment 3"
    delivery.stop()
    assert delivery.dropped == len(queued)  # what was not delivered when it ended is counted


def test_bad_broker_urls_are_config_errors() -> None:
    for url, says in [
        ("http://broker.local", "mqtt://"),
        ("broker.local:1883", "mqtt://"),
        ("mqtt://", "no broker host"),
        ("mqtt://broker.local:99999", "1 to 65535"),
        ("mqtt://broker.local:port", "1 to 65535"),
        ("mqtt://broker.local:0", "1 to 65535"),
        ("mqtt://broker.local/cameras", "--mqtt-topic"),
    ]:
        with pytest.raises(ConfigError, match=says):
            parse_broker(url)
    with pytest.raises(ConfigError) as refused:
        parse_broker("https://me:hunter2@broker.local")
    assert "hunter2" not in str(refused.value)

    tls = parse_broker("mqtts://ha%40home:p%3Ass%20w@broker.local")
    assert (tls.host, tls.port, tls.tls, tls.username, tls.password) == (
        "broker.local",
        8883,
        True,
        "ha@home",
        "p:ss w",
    )
    assert parse_broker("mqtt://broker.local").port == 1883
    assert MqttDelivery.from_settings(Settings(mqtt=None)) is None
    with pytest.raises(ConfigError, match="--mqtt-discovery"):
        MqttDelivery.from_settings(Settings(mqtt="mqtt://broker.local", mqtt_discovery="home/#"))


@needs_broker
def test_a_rule_added_while_running_is_announced_with_its_words_at_its_first_check(
    broker: Mosquitto, watcher: Subscriber
) -> None:
    run = Run(MqttDelivery.from_settings(Settings(mqtt=broker.url())))  # no --watch: the page adds the rule
    run.publish(camera_started())
    config = "homeassistant/binary_sensor/onlooker_front-door/cat/config"
    check = RuleCheck(
        t=3.0, camera=FRONT, rule="cat", answer="no", confidence=0.9, reason="", trigger="motion", ms=5.0,
        text="a cat on the sofa",
    )  # fmt: skip
    run.publish(check)
    assert json.loads(watcher.wait_topic(config).payload)["name"] == "A cat on the sofa"
    run.finish()
