"""The MQTT topic layout and the Home Assistant discovery configs that describe it.

Home Assistant builds entities from retained JSON configs under its discovery prefix, so a camera's rules
and its last comment appear there without a line of YAML. The configs must name exactly the topics the
delivery publishes on, so both come from here: ``Topics`` is the one place the layout is written down
(``docs/alerts.md`` shows it as a table). Pure: no client, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipeline.events import CameraTag

ONLINE, OFFLINE = "online", "offline"  # the availability payloads (the last will says offline)
STATE_ON, STATE_OFF = "ON", "OFF"
EVENT_TYPES = ("started", "cleared")  # an Alert's states, as the event entity's types
SENSOR_STATE_MAX = 255  # Home Assistant refuses a longer sensor state; the full text goes in the attributes
NAME_MAX = 64  # an entity's name from a rule's words (up to 200 characters) stays readable in lists
ORIGIN = {"name": "Onlooker"}


def topic_slug(text: str) -> str:
    """One topic level (and discovery id) from any name: no ``/``, ``+`` or ``#``, nothing Home Assistant
    refuses in a node or object id."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "unnamed"


@dataclass(frozen=True)
class Topics:
    """Where everything goes under one base topic (``--mqtt-topic``)."""

    base: str

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    def rule(self, camera_id: str, rule: str, leaf: str) -> str:
        """A rule's topic on a camera: ``state``, ``alert``, ``event`` or ``snapshot``."""
        return f"{self.base}/{topic_slug(camera_id)}/{topic_slug(rule)}/{leaf}"

    def comment(self, camera_id: str) -> str:
        return f"{self.base}/{topic_slug(camera_id)}/comment"

    def comment_attributes(self, camera_id: str) -> str:
        return f"{self.comment(camera_id)}/attributes"


@dataclass(frozen=True)
class Discovery:
    """Home Assistant's configs for the layout in ``topics``, under ``prefix`` (``homeassistant``)."""

    prefix: str
    topics: Topics

    @property
    def status_topic(self) -> str:
        """Where Home Assistant says "online" when it (re)starts: then every config is published again."""
        return f"{self.prefix}/status"

    def camera(self, camera: CameraTag) -> list[tuple[str, dict[str, Any]]]:
        """A camera's own entity: its last comment (a sensor, the whole text in its attributes)."""
        config = {
            "name": "Last comment",
            "icon": "mdi:comment-text-outline",
            "state_topic": self.topics.comment(camera.id),
            "json_attributes_topic": self.topics.comment_attributes(camera.id),
        }
        return [self._config("sensor", camera, "comment", config)]

    def rule(self, camera: CameraTag, rule: str, text: str) -> list[tuple[str, dict[str, Any]]]:
        """A rule's entities on a camera: whether it holds now (binary sensor), each start and clear (event,
        for automations), and the picture that started it (image)."""
        name = text if len(text) <= NAME_MAX else text[: NAME_MAX - 1].rstrip() + "…"
        name = name[:1].upper() + name[1:]
        topic = self.topics.rule
        binary = {
            "name": name,
            "state_topic": topic(camera.id, rule, "state"),
            "payload_on": STATE_ON,
            "payload_off": STATE_OFF,
        }
        event = {"name": f"{name} alerts", "state_topic": topic(camera.id, rule, "event"), "event_types": EVENT_TYPES}
        image = {
            "name": f"{name} snapshot",
            "image_topic": topic(camera.id, rule, "snapshot"),
            "content_type": "image/jpeg",
        }
        return [
            self._config("binary_sensor", camera, rule, binary),
            self._config("event", camera, rule, event),
            self._config("image", camera, rule, image),
        ]

    def _config(
        self, component: str, camera: CameraTag, object_id: str, config: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """One retained config: where it goes and what every entity shares (availability, the camera as a
        device, an id that stays the same across runs so Home Assistant keeps the entity's settings)."""
        node = topic_slug(f"{self.topics.base}_{camera.id}")
        object_id = topic_slug(object_id)
        shared = {
            "unique_id": f"{node}_{object_id}_{component}",
            "availability_topic": self.topics.availability,
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "qos": 1,
            "device": {"identifiers": [node], "name": camera.name or camera.id, "manufacturer": "Onlooker"},
            "origin": ORIGIN,
        }
        return f"{self.prefix}/{component}/{node}/{object_id}/config", {**config, **shared}
