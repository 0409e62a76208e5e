"""Consumers that the run's settings turn on, by name: adding one is a module with a ``Consumer``
subclass whose ``from_settings(settings)`` returns an instance, or None when the settings leave it off,
plus one line in ``REGISTRY``.

Front ends add their own consumers too (the CLI's transcript printer and events file, the web page's
feeds); these are the ones every front end gets from the same settings.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.consumers.base import Consumer

REGISTRY: dict[str, str] = {
    "second_opinion": "pipeline.second_opinion:SecondOpinion",
    "recorder": "pipeline.recording.recorder:Recorder",
    "subtitles": "pipeline.recording.subtitles_file:SubtitlesFile",
    "mqtt": "pipeline.deliveries.mqtt:MqttDelivery",
    "webhook": "pipeline.deliveries.webhook:WebhookDelivery",
    "push": "pipeline.deliveries.push:PushDelivery",
}


def consumers_from_settings(settings: Settings) -> list[Consumer]:
    """A new instance of every registered consumer the settings turn on (a session owns its consumers)."""
    made = []
    for where in REGISTRY.values():
        module_name, class_name = where.split(":")
        consumer = getattr(importlib.import_module(module_name), class_name).from_settings(settings)
        if consumer is not None:
            made.append(consumer)
    return made
