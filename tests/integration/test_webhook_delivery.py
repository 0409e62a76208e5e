"""The webhook delivery against a real HTTP receiver on loopback: what a receiver gets (payload version 1,
headers, a signature it can check, the snapshot), and how the delivery behaves when the receiver fails (500,
a hang, down, a refusal, Retry-After), with its outbox bounded, while the bus never waits for it."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import time
import uuid

import cv2
import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.deliveries.webhook import WebhookDelivery
from pipeline.errors import ConfigError
from pipeline.events import CommentaryFinished
from tests.helpers.webhook_receiver import DeliveryRun, WebhookReceiver, alert, picture

SECRET = "s3cret-shared-with-the-receiver"


def delivered_ids(requests) -> list[str]:
    return [json.loads(r.body)["id"] for r in requests if r.status == 200]


@pytest.fixture
def receiver():
    with WebhookReceiver() as receiver:
        yield receiver


def test_a_receiver_gets_the_payload_the_headers_a_signature_it_can_check_and_the_snapshot(receiver):
    bgr, jpeg = picture()
    with DeliveryRun(WebhookDelivery(receiver.url(), SECRET)) as run:
        before = time.time()
        run.publish(alert(1, jpeg=jpeg))
        [got] = receiver.wait_for(1)
        run.wait_status(lambda s: s.sent == 1 and s.state == "ok")

    assert got.method == "POST" and got.path == "/hook"
    headers = got.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("Onlooker/")
    assert headers["x-onlooker-event"] == "alert"
    assert uuid.UUID(headers["x-onlooker-delivery"])
    timestamp = headers["x-onlooker-timestamp"]
    assert int(before) - 1 <= int(timestamp) <= time.time() + 1

    signed = timestamp.encode() + b"." + got.body  # what docs/alerts.md tells a receiver to check
    expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-onlooker-signature"], expected)
    forged = "sha256=" + hmac.new(b"another secret", signed, hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(headers["x-onlooker-signature"], forged)

    payload = json.loads(got.body.decode("utf-8"))
    assert payload["version"] == 1
    assert payload["type"] == "alert"
    assert payload["id"] == "front-door-person-00000001"
    assert (payload["rule"], payload["text"], payload["state"]) == ("person", "a person at the door", "started")
    assert payload["camera"] == {"id": "front-door", "name": "Front door"}
    assert payload["confidence"] == 0.875 and payload["reason"] == "someone stands on the doorstep"
    assert payload["media_time"] == 13.5
    assert payload["time"] == "2023-11-14T22:13:21.250Z"
    assert payload["recording"] == {"snapshot": "alerts/front-door-person-00000001.jpg", "clip": None}
    assert payload["snapshot"]["content_type"] == "image/jpeg"
    sent = base64.b64decode(payload["snapshot"]["base64"])
    assert sent == jpeg
    decoded = cv2.imdecode(np.frombuffer(sent, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == bgr.shape
    assert np.array_equal(decoded, cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))


def test_without_a_secret_there_is_no_signature_and_a_cleared_alert_has_no_snapshot(receiver):
    words = "quelqu’un à la porte 🚪"
    with DeliveryRun(WebhookDelivery(receiver.url())) as run:
        run.publish(dataclasses.replace(alert(1, state="cleared"), text=words))
        [got] = receiver.wait_for(1)
    assert "x-onlooker-signature" not in got.headers
    assert words.encode() in got.body, "text goes as UTF-8, not as \\u escapes"
    payload = json.loads(got.body)
    assert payload["text"] == words
    assert payload["state"] == "cleared" and payload["snapshot"] is None
    assert payload["recording"] == {"snapshot": None, "clip": None}


def test_a_500_is_tried_again_with_the_same_body_and_delivery_id_and_delivered_once(receiver):
    receiver.fail_next(1, 500)
    with DeliveryRun(WebhookDelivery(receiver.url(), SECRET)) as run:
        run.publish(alert(1))
        first, second = receiver.wait_for(2)
        run.wait_status(lambda s: s.sent == 1)
    assert (first.status, second.status) == (500, 200)
    assert first.body == second.body
    assert first.headers["x-onlooker-delivery"] == second.headers["x-onlooker-delivery"]
    retrying = [s for s in run.statuses if s.state == "retrying"]
    assert retrying and "HTTP 500" in retrying[0].detail
    assert run.statuses[-1].state == "ok" and run.statuses[-1].dropped == 0
    assert len(receiver.requests) == 2


def test_a_receiver_that_hangs_is_cut_off_by_the_timeout_and_tried_again(receiver):
    receiver.hang_next(1)
    with DeliveryRun(WebhookDelivery(receiver.url(), timeout=0.5)) as run:
        started = time.monotonic()
        run.publish(alert(1))
        retrying = run.wait_status(lambda s: s.state == "retrying")
        assert "no answer within 0.5 s" in retrying.detail
        assert time.monotonic() - started < 3
        hung, delivered = receiver.wait_for(2)
        run.wait_status(lambda s: s.sent == 1 and s.state == "ok")
    assert (hung.status, delivered.status) == (0, 200)
    assert hung.headers["x-onlooker-delivery"] == delivered.headers["x-onlooker-delivery"]


def test_while_the_receiver_is_down_alerts_wait_and_all_arrive_in_order_when_it_is_back(receiver, caplog):
    """The first alert leaves a kept-alive connection behind; the receiver goes down (that connection cut with
    it) and comes back on the same port."""
    caplog.set_level(logging.WARNING)
    url = receiver.url(userinfo="onlooker:hunter2")
    with DeliveryRun(WebhookDelivery(url, SECRET)) as run:
        run.publish(alert(1))
        run.wait_status(lambda s: s.sent == 1)
        receiver.stop()
        run.publish(alert(2), alert(3), alert(4))
        down = run.wait_status(lambda s: s.state in ("retrying", "down") and s.queued == 3)
        assert "cannot connect" in down.detail and "***@127.0.0.1" in down.detail
        receiver.start()
        receiver.wait_for(4, timeout=15)
        run.wait_status(lambda s: s.sent == 4 and s.state == "ok")
    assert delivered_ids(receiver.requests) == [f"front-door-person-{n:08x}" for n in (1, 2, 3, 4)]
    assert run.statuses[-1].dropped == 0
    said = " ".join(s.detail for s in run.statuses) + caplog.text
    assert "hunter2" not in said and SECRET not in said


def test_the_outbox_is_bounded_the_oldest_alerts_give_way_and_are_counted(receiver):
    class SmallOutbox(WebhookDelivery):
        outbox_size = 3

    receiver.stop()
    with DeliveryRun(SmallOutbox(receiver.url())) as run:
        run.publish(*(alert(n) for n in range(1, 7)))
        run.wait_status(lambda s: s.dropped == 3 and s.queued == 3)
        receiver.start()
        run.wait_status(lambda s: s.sent == 3, timeout=15)
    assert delivered_ids(receiver.requests) == [f"front-door-person-{n:08x}" for n in (4, 5, 6)]
    assert run.delivery.dropped == 3


def test_a_refusal_is_not_tried_again_it_is_dropped_and_counted(receiver):
    receiver.fail_next(1, 400)
    with DeliveryRun(WebhookDelivery(receiver.url())) as run:
        run.publish(alert(1), alert(2))
        receiver.wait_for(2)
        last = run.wait_status(lambda s: s.sent == 1 and s.dropped == 1)
    assert [r.status for r in receiver.requests] == [400, 200]
    assert delivered_ids(receiver.requests) == ["front-door-person-00000002"]
    refused = [s for s in run.statuses if "refused" in s.detail]
    assert refused and "HTTP 400" in refused[0].detail
    assert last.queued == 0


def test_retry_after_is_honoured(receiver):
    receiver.fail_next(1, 429, {"Retry-After": "1"})
    with DeliveryRun(WebhookDelivery(receiver.url())) as run:
        run.publish(alert(1))
        busy, delivered = receiver.wait_for(2)
        assert "asked to wait 1 s" in run.wait_status(lambda s: s.state == "retrying").detail
    assert delivered.at - busy.at >= 0.95


def test_publishing_never_waits_for_a_receiver_that_hangs(receiver):
    """The bus hands alerts over at once, and another consumer (the commentary's feeds) hears everything
    on time, while the delivery is stuck in a hung request."""
    receiver.hang_next(5)
    with DeliveryRun(WebhookDelivery(receiver.url(), timeout=2.0)) as run:
        others = run.bus.subscribe("commentary-feed")
        run.publish(alert(1))
        receiver.wait_for(1)  # the delivery's thread is now inside the hung POST
        started = time.monotonic()
        for n in range(200):
            run.publish(CommentaryFinished(t=n, comment_id=n, text=f"comment {n}"), alert(n + 2))
        assert time.monotonic() - started < 0.5
        count = 0
        while count < 401 and others.get(timeout=1.0) is not None:
            count += 1
        assert count == 401, "the other consumer heard every event without waiting for the delivery"
        run.delivery.stop()  # do not wait for the 200 queued alerts to go through the hangs


def test_settings_turn_the_webhook_on_and_a_bad_url_is_a_clear_error():
    assert WebhookDelivery.from_settings(Settings()) is None
    made = WebhookDelivery.from_settings(Settings(webhook="https://example.org/hook", webhook_secret="x"))
    assert isinstance(made, WebhookDelivery) and made.secret == "x"
    made.stop()
    for url, words in [
        ("ftp://example.org/hook", "only http:// and https://"),
        ("example.org/hook", "only http:// and https://"),
        ("http:///hook", "no host"),
    ]:
        with pytest.raises(ConfigError, match=words):
            WebhookDelivery(url)
    with pytest.raises(ConfigError) as refused:
        WebhookDelivery("ftp://user:hunter2@example.org/hook")
    assert "hunter2" not in str(refused.value)
