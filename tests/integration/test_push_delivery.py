"""The push delivery through real Apprise to a real HTTP receiver on loopback: Apprise's JSON service
(``json://``, which posts the title, the message and the attachments in base64) and its ntfy service pointed
at the receiver. The snapshot arrives as the JPEG it was, a failing or hung service is tried again (and only
that one), and a URL Apprise cannot send to is an error at start."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.deliveries.push import PushDelivery, make_target
from pipeline.errors import ConfigError
from tests.helpers.webhook_receiver import DeliveryRun, WebhookReceiver, alert, picture


@pytest.fixture
def receiver():
    with WebhookReceiver() as receiver:
        yield receiver


def push_to(*urls: str) -> PushDelivery:
    return PushDelivery([make_target(url, number) for number, url in enumerate(urls, 1)])


def test_an_alert_arrives_with_its_title_reason_and_snapshot_and_a_cleared_one_without(receiver):
    bgr, jpeg = picture()
    delivery = push_to(f"json://127.0.0.1:{receiver.port}/push")
    with DeliveryRun(delivery) as run:
        run.publish(alert(1, jpeg=jpeg), alert(1, state="cleared"))
        started, cleared = receiver.wait_for(2)
        run.wait_status(lambda s: s.sent == 2)
        assert list(Path(delivery.scratch.name).iterdir()) == [], "the snapshot file goes once it was sent"
    assert not Path(delivery.scratch.name).exists()

    assert started.path == "/push" and started.headers["user-agent"] == "Onlooker"
    sent = json.loads(started.body)
    assert sent["title"] == "A person at the door — Front door"
    assert sent["message"] == "someone stands on the doorstep (88% sure)"
    assert sent["type"] == "warning"
    [attachment] = sent["attachments"]
    assert attachment["filename"] == "front-door-person-00000001.jpg"
    assert attachment["mimetype"] == "image/jpeg"
    arrived = base64.b64decode(attachment["base64"])
    assert arrived == jpeg
    decoded = cv2.imdecode(np.frombuffer(arrived, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == bgr.shape

    after = json.loads(cleared.body)
    assert after["title"] == "Cleared: a person at the door — Front door"
    assert after["type"] == "success" and after["attachments"] == []


def test_a_failing_service_is_tried_again_and_only_that_one(receiver):
    receiver.fail_next(1, 500)
    with DeliveryRun(push_to(f"json://127.0.0.1:{receiver.port}/a", f"json://127.0.0.1:{receiver.port}/b")) as run:
        run.publish(alert(1, jpeg=picture()[1]))
        receiver.wait_for(3)
        retrying = run.wait_status(lambda s: s.state == "retrying")
        run.wait_status(lambda s: s.sent == 1 and s.state == "ok")
    assert [(r.path, r.status) for r in receiver.requests] == [("/a", 500), ("/b", 200), ("/a", 200)]
    assert "json://127.0.0.1" in retrying.detail and "error=500" in retrying.detail
    assert receiver.requests[0].body == receiver.requests[2].body


def test_a_hung_service_is_cut_off_by_the_timeout_the_url_sets_and_tried_again(receiver):
    receiver.hang_next(1)
    delivery = push_to(f"json://127.0.0.1:{receiver.port}/push?rto=0.5")
    assert delivery.targets[0].apprise[0].socket_read_timeout == 0.5
    with DeliveryRun(delivery) as run:
        run.publish(alert(1))
        run.wait_status(lambda s: s.state == "retrying", timeout=5)
        hung, delivered = receiver.wait_for(2)
        run.wait_status(lambda s: s.sent == 1)
    assert (hung.status, delivered.status) == (0, 200)


def test_ntfy_gets_the_snapshot_as_the_body_with_the_title_and_message(receiver):
    _, jpeg = picture()
    with DeliveryRun(push_to(f"ntfy://127.0.0.1:{receiver.port}/front-door")) as run:
        run.publish(alert(1, jpeg=jpeg))
        [got] = receiver.wait_for(1)
        run.wait_status(lambda s: s.sent == 1)
    assert got.path == "/front-door" and got.body == jpeg
    assert got.query["title"] == ["A person at the door — Front door"]
    assert got.query["message"] == ["someone stands on the doorstep (88% sure)"]
    assert got.query["filename"] == ["front-door-person-00000001.jpg"]


def test_urls_are_checked_at_start_and_get_short_timeouts_unless_they_set_their_own(caplog):
    caplog.set_level(logging.DEBUG)
    assert PushDelivery.from_settings(Settings()) is None
    made = PushDelivery.from_settings(Settings(notify=["ntfy://ntfy.example.org/alerts", "json://localhost?cto=7"]))
    assert made is not None
    timeouts = [(t.apprise[0].socket_connect_timeout, t.apprise[0].socket_read_timeout) for t in made.targets]
    assert timeouts == [(3.0, 5.0), (7.0, 5.0)]
    assert made.targets[0].shown == "ntfy://ntfy.example.org/alerts"
    made.stop()

    with pytest.raises(ConfigError) as unknown:
        PushDelivery.from_settings(Settings(notify=["ntfy://ntfy.example.org/alerts", "nope://token-abc@x/y"]))
    message = str(unknown.value)
    assert "--notify #2 (nope://…)" in message and "https://github.com/caronc/apprise/wiki" in message
    assert "token-abc" not in message and "token-abc" not in caplog.text, "Apprise's own log line is held back"
    with pytest.raises(ConfigError, match=r"#1 \(tgram://…\)"):
        make_target("tgram://not-a-bot-token")
    with pytest.raises(ConfigError, match="without service://"):
        make_target("ntfy.sh/alerts")
