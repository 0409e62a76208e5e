"""Recorded session folders made for tests, in the recorder's formats: ``session.json`` through
``write_meta``, ``events.jsonl`` from the real event classes' ``to_dict`` (``camera_start``, a comment's
start, delta and end, suppressed ones too) and ``alert`` lines as the alerts will write them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.events import CameraStarted, CameraTag, CommentaryDelta, CommentaryFinished, CommentaryStarted, ErrorEvent
from pipeline.recording.folder import EVENTS, CameraMeta, SessionMeta, write_meta


@dataclass(frozen=True)
class Said:
    """A comment at media time ``t`` on camera ``camera`` (an id); ``suppressed`` names why it was not kept."""

    t: float
    text: str
    camera: str = "front-door"
    suppressed: str = ""


@dataclass(frozen=True)
class Raised:
    """An ``alert`` line: a rule that started or cleared on a camera."""

    t: float
    rule: str
    state: str = "started"
    camera: str = "front-door"
    confidence: float = 0.9
    reason: str = ""
    snapshot: str | None = None


def tag(camera_id: str) -> CameraTag:
    return CameraTag(camera_id, f"{camera_id} camera")


def write_session(
    root: Path,
    name: str,
    *,
    started: float,
    said: Iterable[Said] = (),
    alerts: Iterable[Raised] = (),
    errors: int = 0,
    owner: str | None = None,
    cameras: tuple[str, ...] = ("front-door",),
    interrupted: bool = False,
    padding: int = 0,
) -> Path:
    """A session folder ``root/name`` started at Unix time ``started``; ``padding`` bytes of a stand-in video
    file make its size. Returns the folder."""
    folder = root / name
    folder.mkdir(parents=True)
    said, alerts = list(said), list(alerts)
    lines: list[dict] = []
    for camera in cameras:
        lines.append(
            CameraStarted(
                t=0.0,
                camera=tag(camera),
                source=f"rtsp://***@{camera}.local/stream",
                kind="stream",
                profile="security",
                preset="fast",
                instructions="",
                backend="opencv",
                speaks=False,
            ).to_dict()
        )
    for number, comment in enumerate(said, start=1):
        camera = tag(comment.camera)
        lines.append(
            CommentaryStarted(t=comment.t, camera=camera, comment_id=number, trigger="active", frames=4).to_dict()
        )
        lines.append(CommentaryDelta(t=comment.t, camera=camera, comment_id=number, text=comment.text[:5]).to_dict())
        end = CommentaryFinished(
            t=comment.t, camera=camera, comment_id=number, text=comment.text, suppressed=comment.suppressed
        )
        lines.append(end.to_dict())
    for alert in alerts:
        lines.append(
            {
                "type": "alert",
                "t": alert.t,
                "wall": started + alert.t,
                "camera": {"id": alert.camera, "name": tag(alert.camera).name},
                "rule": alert.rule,
                "state": alert.state,
                "confidence": alert.confidence,
                "reason": alert.reason,
                "snapshot": alert.snapshot,
            }
        )
    for k in range(errors):
        lines.append(ErrorEvent(t=float(k), message="the source stalled").to_dict())
    lines.sort(key=lambda line: line["t"])
    with open(folder / EVENTS, "w", encoding="utf-8") as file:
        for line in lines:
            file.write(json.dumps(line, ensure_ascii=False) + "\n")
    duration = max((line["t"] for line in lines), default=0.0)
    meta = SessionMeta(
        id=name,
        started=started,
        ended=None if interrupted else started + duration + 1.0,
        interrupted=interrupted,
        owner=owner,
        cameras=[
            CameraMeta(
                id=camera,
                name=tag(camera).name,
                source=f"rtsp://***@{camera}.local/stream",
                kind="stream",
                profile="security",
                preset="fast",
                instructions="",
                backend="opencv",
                speaks=False,
                files={"events": EVENTS},
            )
            for camera in cameras
        ],
        duration=duration,
        comments=sum(1 for s in said if not s.suppressed and s.text.strip()),
        alerts=sum(1 for a in alerts if a.state == "started"),
        errors=errors,
    )
    write_meta(folder, meta)
    if padding:
        (folder / "video.mp4").write_bytes(b"\0" * padding)
    return folder
