"""The alert as every delivery sends it: one documented, versioned JSON shape (``docs/alerts.md``).

Version 1. A receiver should ignore keys it does not know (new ones may come within a version) and
check ``version`` before anything else: a change that removes or redefines a key raises it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pipeline.events import Alert

PAYLOAD_VERSION = 1


def alert_payload(alert: Alert, snapshot: bool = True) -> dict[str, Any]:
    """The alert as JSON-ready data; ``snapshot`` includes the JPEG (base64) when there is one."""
    camera = alert.camera
    data: dict[str, Any] = {
        "version": PAYLOAD_VERSION,
        "type": "alert",
        "id": alert.alert_id,
        "rule": alert.rule,
        "text": alert.text,
        "state": alert.state,
        "camera": {"id": camera.id, "name": camera.name} if camera else None,
        "confidence": alert.confidence,
        "reason": alert.reason,
        "media_time": round(alert.t, 3),
        "time": datetime.fromtimestamp(alert.wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "recording": {"snapshot": alert.snapshot or None, "clip": alert.clip or None},
        "snapshot": None,
    }
    if snapshot and alert.jpeg:
        data["snapshot"] = {"content_type": "image/jpeg", "base64": base64.b64encode(alert.jpeg).decode("ascii")}
    return data


def compact_json(data: Mapping[str, Any]) -> bytes:
    """JSON as it goes on the wire: compact UTF-8, non-ASCII text as is (receivers read UTF-8)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def alert_json(alert: Alert, snapshot: bool = True) -> bytes:
    """The payload as it goes on the wire."""
    return compact_json(alert_payload(alert, snapshot))


def alert_title(alert: Alert) -> str:
    """A notification's title: what and where ("Person at the door: front door")."""
    where = alert.camera.name if alert.camera else "Onlooker"
    what = alert.text if alert.state == "started" else f"cleared: {alert.text}"
    return f"{what[:1].upper()}{what[1:]} — {where}"


def alert_body(alert: Alert) -> str:
    """A notification's body: the model's reason and how sure it was."""
    sure = f"{alert.confidence:.0%} sure"
    return f"{alert.reason} ({sure})" if alert.reason else sure
