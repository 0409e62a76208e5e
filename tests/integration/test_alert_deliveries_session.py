"""Alert deliveries in a running session, as a user runs them: the receivers go away mid-run (the MQTT broker
is killed, the webhook receiver stops listening) and come back. No alert is lost (queued, then delivered to
both), and commentary never pauses for them: comments keep coming on the media timeline while they are down.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from pipeline.backends.base import CommentRequest
from pipeline.config import Tuning
from pipeline.deliveries.mqtt import MqttDelivery, parse_broker
from pipeline.deliveries.webhook import WebhookDelivery
from pipeline.events import Alert, CommentaryFinished, DeliveryStatus
from pipeline.session import Session
from tests.helpers.checking_backend import NO, CheckingBackend, yes
from tests.helpers.media import Segment, write_video
from tests.helpers.mosquitto import Mosquitto, Subscriber, missing_mosquitto_reason
from tests.helpers.session_run import Watcher, one_camera, play, watch_desk
from tests.helpers.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.skipif(
    missing_mosquitto_reason(passwords=True) is not None, reason=missing_mosquitto_reason(passwords=True) or ""
)
USERS = {"onlooker": "pw", "watcher": "w"}


def every_other_two_seconds(request: CommentRequest) -> str:
    """Yes for two media seconds, no for two: an alert starts and clears every 4 s."""
    return yes() if int(request.frames[-1].media_time) % 4 < 2 else NO


def test_receivers_down_mid_run_lose_no_alert_and_commentary_never_pauses(tmp_path: Path) -> None:
    video = write_video(tmp_path / "still.mp4", [Segment(24.0, 2)])
    backend = CheckingBackend(decide=every_other_two_seconds)
    desk = watch_desk(backend, "door=a person at the door", interval=1.0, clear=1, cooldown=0)
    chatty = Tuning(heartbeat=0.5, min_interval=0.5, active_interval=0.5)
    with (
        Mosquitto(tmp_path / "broker", users=USERS) as broker,
        Subscriber(broker, topics=("onlooker/+/+/alert",), user="watcher") as mqtt_watcher,
        WebhookReceiver() as receiver,
    ):
        deliveries = [
            MqttDelivery(parse_broker(broker.url("onlooker")), discovery_prefix=""),
            WebhookDelivery(receiver.url()),
        ]
        session = one_camera(backend, watch=desk, tuning=chatty, consumers=deliveries)
        outage: dict[str, float] = {}

        def take_them_away(session: Session) -> None:
            watch = Watcher(session)
            watch.until(lambda e: isinstance(e, Alert) and e.state == "started", "a first alert")
            mqtt_watcher.wait_for(lambda m: True)
            receiver.wait_for(1)
            broker.kill()
            receiver.stop()
            outage["from"] = time.time()
            watch.until(lambda e: isinstance(e, DeliveryStatus) and e.queued > 0, "alerts queued")
            for _ in range(2):  # two more alerts, and their clearing, while both are down
                watch.until(lambda e: isinstance(e, Alert) and e.state == "cleared", "an alert while down", 20)
            outage["to"] = time.time()
            subscriptions = mqtt_watcher.subscribed
            broker.users = {"watcher": USERS["watcher"]}  # the test's subscriber first, so it misses nothing
            broker.start()
            mqtt_watcher.wait_subscribed(subscriptions + 1)
            broker.set_users(USERS)
            receiver.start()

        run = play(session, video, speed=2.0, during=take_them_away, timeout=120)

    sent = {(a.alert_id, a.state) for a in run.of(Alert)}
    assert len(sent) >= 6
    by_webhook = {(body["id"], body["state"]) for body in (json.loads(r.body) for r in receiver.requests)}
    by_mqtt = {(body["id"], body["state"]) for body in (json.loads(m.payload) for m in mqtt_watcher.messages)}
    assert sent <= by_webhook, sent - by_webhook
    assert sent <= by_mqtt, sent - by_mqtt
    statuses = run.of(DeliveryStatus)
    assert {s.name for s in statuses if s.state in ("retrying", "down")} == {"mqtt", "webhook"}
    assert all(s.dropped == 0 for s in statuses)

    walls = [c.wall for c in run.of(CommentaryFinished)]  # the loop's pace (the double's replies look alike)
    during = [w for w in walls if outage["from"] <= w <= outage["to"]]
    assert len(during) >= (outage["to"] - outage["from"]) / 0.5, "a comment every 0.25 s of wall time, down or not"
    gaps = [b - a for a, b in itertools.pairwise(walls)]
    assert max(gaps) < 1.0, f"commentary paused for {max(gaps):.2f} s"
