"""How fast an alert reaches the people it is for, measured where they are: a webhook receiver and an MQTT
subscriber on loopback, their own arrival clocks against the moment the event happened in the video.

The video is played at its real rate by the real file source: still for 3 s, then a square pacing on the
left (the event, at a known media time). The event "happens" when the first frame showing it is decoded
(the camera's moment); the webhook arrival (``tests/helpers/webhook_receiver.py``) and the MQTT message
on a real Mosquitto (``tests/helpers/mosquitto.py``) are timed on the same monotonic clock. Two models:
the offline narrator (rule "motion on the left"), and a scripted model of fixed latency (``--latency``)
that answers yes once the frames show the event (``tests/helpers/checking_backend.py``: a double, since
no real model answers to a script; its latency stands for the model's time). The pipeline's own share is
the arrival time minus the model's time for the check that confirmed the alert (``pipeline_ms``); of it,
``detection_ms`` is video time: the event's first frame until the frame whose motion crossed the preset's
threshold (frames at 15 a second), and ``pipeline_own_ms`` the rest: from that frame's decoding to the
receiver, less the model's time (the scheduler turn, the snapshot JPEG, the bus, the HTTP or MQTT send).

Also: checks per minute and their share of the backend's time; false alerts on a clip with no event; and
commentary with both deliveries failing (the webhook hanging, the broker down) against both working.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

from common import report, summary

from pipeline.backends.base import Backend
from pipeline.backends.opencv_narrator import OpenCVNarrator
from pipeline.config import Tuning
from pipeline.consumers.base import Consumer
from pipeline.deliveries.mqtt import MqttDelivery, parse_broker
from pipeline.deliveries.webhook import WebhookDelivery
from pipeline.events import Alert, CommentaryFinished, Metrics, RuleCheck
from pipeline.frames import Frame
from pipeline.sources.file import FileSource
from tests.helpers.checking_backend import NO, CheckingBackend, yes
from tests.helpers.media import Segment, write_video
from tests.helpers.mosquitto import Mosquitto, Subscriber
from tests.helpers.session_run import EventCollector, one_camera, watch_desk

EVENT_AT = 3.0
RULE = "left=motion on the left"


class Run:
    """One session on the event video with both deliveries; what happened when, on one monotonic clock."""

    def __init__(
        self,
        backend: Backend,
        video: Path,
        webhook_url: str,
        mqtt_url: str,
        speed: float = 1.0,
        tuning: Tuning | None = None,
    ) -> None:
        self.collector = EventCollector()
        deliveries: list[Consumer] = [
            WebhookDelivery(webhook_url),
            MqttDelivery(parse_broker(mqtt_url), discovery_prefix=""),
        ]
        desk = watch_desk(backend, RULE, interval=10.0)
        self.session = one_camera(backend, watch=desk, consumers=[*deliveries, self.collector], tuning=tuning)
        self.event_seen: float | None = None
        self.decoded: dict[float, float] = {}  # media time → when that frame was decoded (monotonic)
        camera = self.session.camera
        on_frame = camera._on_frame

        def timed(frame: Frame) -> None:  # the camera's moment: the first frame that shows the event, decoded
            now = time.monotonic()
            self.decoded[frame.media_time] = now
            if self.event_seen is None and frame.media_time >= EVENT_AT:
                self.event_seen = now
            on_frame(frame)

        camera._on_frame = timed  # type: ignore[method-assign]
        self.session.start(FileSource(str(video), rate=speed))
        self.session.join(120)
        self.session.stop()

    def of(self, kind: type) -> list:
        return [e for e in self.collector.events if isinstance(e, kind)]


def scripted(latency: float) -> CheckingBackend:
    """The fixed-latency model: yes once the newest frame is at or after the event."""
    return CheckingBackend(
        decide=lambda r: yes(0.9, "motion on the left") if r.frames[-1].media_time >= EVENT_AT else NO,
        latency=latency,
    )


def latencies(make: callable, runs: int, video: Path, receiver, broker: Mosquitto) -> dict:  # type: ignore[valid-type]
    webhook, mqtt, model, pipeline_ms, own_ms, confirm_media = [], [], [], [], [], []
    with Subscriber(broker, topics=("onlooker/+/+/alert",)) as subscriber:
        for _ in range(runs):
            subscriber.clear()
            before = len(receiver.requests)
            run = Run(make(), video, receiver.url(), broker.url())
            started = [a for a in run.of(Alert) if a.state == "started"]
            if not started or run.event_seen is None:
                print("  a run without an alert: skipped")
                continue
            alert = started[0]
            check = next(c for c in run.of(RuleCheck) if c.rule == "left" and c.t == alert.t and c.answer == "yes")
            hook = next(r for r in receiver.requests[before:] if alert.alert_id.encode() in r.body)
            message = next(m for m in subscriber.messages if alert.alert_id.encode() in m.payload)
            webhook.append((hook.at - run.event_seen) * 1000)
            mqtt.append((message.at - run.event_seen) * 1000)
            model.append(check.ms)
            pipeline_ms.append(webhook[-1] - check.ms)
            own_ms.append((hook.at - run.decoded[alert.t]) * 1000 - check.ms)
            confirm_media.append((alert.t - EVENT_AT) * 1000)
    return {
        "event_to_webhook_ms": summary(webhook),
        "event_to_mqtt_ms": summary(mqtt),
        "model_check_ms": summary(model),
        "pipeline_ms": summary(pipeline_ms),
        "detection_ms": summary(confirm_media),
        "pipeline_own_ms": summary(own_ms),
    }


def share_and_false_alerts(video: Path, receiver, broker: Mosquitto) -> dict:  # type: ignore[no-untyped-def]
    """A still clip (no event) at 4x: the narrator's checks per minute, their share, any alert."""
    narrator = OpenCVNarrator()
    run = Run(narrator, video, receiver.url(), broker.url(), speed=4.0)
    checks = run.of(RuleCheck)
    minutes = max((checks[-1].t if checks else 0.0) / 60, 1e-9)
    check_ms = sum(c.ms for c in checks)
    comment_ms = sum(m.stages.get("total_ms", 0.0) for m in run.of(Metrics))
    return {
        "media_minutes": round(minutes, 2),
        "checks_per_minute": round(len(checks) / minutes, 1),
        "check_share_of_backend": round(check_ms / max(check_ms + comment_ms, 1e-9), 3),
        "false_alerts": len([a for a in run.of(Alert) if a.state == "started"]),
    }


def commentary_with_failing_deliveries(video: Path, folder: Path, receiver, latency: float) -> dict:  # type: ignore[no-untyped-def]
    """The same scripted session with working deliveries and with both failing (webhook hangs, no broker)."""
    figures = {}
    chatty = Tuning(heartbeat=0.5, min_interval=0.5, active_interval=0.5)  # a comment every half second
    with Mosquitto(folder / "broker-ok") as broker:
        working = Run(scripted(latency), video, receiver.url(), broker.url(), tuning=chatty)
    dead = Mosquitto(folder / "broker-down")  # never started: connections are refused
    receiver.hang_next(1000)
    failing = Run(scripted(latency), video, receiver.url(), dead.url(), tuning=chatty)
    receiver.release()
    for name, run in (("working", working), ("failing", failing)):
        totals = [m.stages.get("total_ms", 0.0) for m in run.of(Metrics)]
        ends = [c.wall for c in run.of(CommentaryFinished)]  # the loop's pace (the double's replies look alike)
        gaps = [b - a for a, b in itertools.pairwise(ends)]
        figures[name] = {
            "comments": len(ends),
            "comment_total_ms_median": round(statistics.median(totals), 2) if totals else None,
            "longest_gap_between_comments_s": round(max(gaps), 2) if gaps else None,
            "alerts_on_bus": len(run.of(Alert)),
        }
    figures["commentary_ms_added_by_failure"] = round(
        (figures["failing"]["comment_total_ms_median"] or 0) - (figures["working"]["comment_total_ms_median"] or 0),
        2,
    )
    return figures


def main() -> None:
    from tests.helpers.webhook_receiver import WebhookReceiver

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="sessions per model (each plays 6 s of video)")
    parser.add_argument("--latency", type=float, default=0.3, help="the scripted model's time per check (s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        video = write_video(folder / "event.mp4", [Segment(EVENT_AT, 1), Segment(3.0, 1, True, (0.0, 0.33))])
        still = write_video(folder / "still.mp4", [Segment(120.0, 2)])
        with WebhookReceiver() as receiver, Mosquitto(folder / "broker") as broker:
            results = {
                "narrator": latencies(OpenCVNarrator, args.runs, video, receiver, broker),
                f"scripted_model_{args.latency:g}s": latencies(
                    lambda: scripted(args.latency), args.runs, video, receiver, broker
                ),
                "still_clip_2_min_narrator": share_and_false_alerts(still, receiver, broker),
            }
            results["deliveries_failing"] = commentary_with_failing_deliveries(video, folder, receiver, args.latency)
    report(
        "alerts",
        results,
        {
            "pipeline_own_ms": "≤ 100 ms on top of the model's own time (median)",
            "commentary_ms_added_by_failure": "0 ms (a delivery failure never slows commentary)",
            "false_alerts": "0 on a clip with no event",
        },
    )


if __name__ == "__main__":
    main()
