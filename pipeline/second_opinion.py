"""A second model's take on the commentary: every N comments, the recent ones go to a text model
on an OpenAI-compatible server (summarise them, translate them, or decide whether something needs
attention), and its answer goes on the bus as an ``Opinion`` event.

It is a bus consumer (``pipeline.consumers.base``) and never holds up the commentary: while it is waiting for an answer,
new comments keep arriving and are part of the next request.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.consumers.base import Consumer
from pipeline.errors import ConfigError
from pipeline.events import CommentaryFinished, ErrorEvent, Event, Opinion
from pipeline.sources.urls import mask_url

if TYPE_CHECKING:
    from pipeline.config import Settings

log = logging.getLogger(__name__)

WINDOW = 20  # most recent comments a request carries
TIMEOUT = 60.0
TASKS = {
    "summary": "Summarise what happened, from these live commentary lines, in one or two sentences.",
    "alert": (
        "These are live commentary lines from a camera. If anything needs a person's attention now "
        "(danger, intrusion, injury, fire, a fall), reply 'ALERT: ' and the reason in one sentence; "
        "otherwise reply 'OK'."
    ),
}


def task_prompt(task: str) -> str:
    """The instruction for ``summary``, ``alert``, ``translate:LANG``, or the text itself as a custom prompt."""
    if task in TASKS:
        return TASKS[task]
    if task.startswith("translate:"):
        language = task.split(":", 1)[1].strip()
        if not language:
            raise ConfigError("--second-opinion-task translate:LANG needs a language, e.g. translate:German")
        return f"Translate these live commentary lines into {language}. Keep them short."
    return task


@dataclass(frozen=True)
class OpinionOptions:
    base_url: str
    model: str
    task: str = "summary"
    every: int = 5
    api_key: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> OpinionOptions | None:
        if not settings.second_opinion_url:
            return None
        if not settings.second_opinion_model:
            raise ConfigError("--second-opinion-url needs --second-opinion-model (the text model's name)")
        task_prompt(settings.second_opinion_task)  # fail at start, not at the fifth comment
        return cls(
            settings.second_opinion_url.rstrip("/"),
            settings.second_opinion_model,
            settings.second_opinion_task,
            settings.second_opinion_every,
            settings.api_key,
        )


class SecondOpinion(Consumer):
    """A consumer: asks on its own thread, so the commentary never waits; one window of recent comments
    per camera, and each answer names the camera it is about."""

    name = "second-opinion"
    wants = (CommentaryFinished,)

    def __init__(self, options: OpinionOptions) -> None:
        import openai

        super().__init__()
        self.options = options
        self.prompt = task_prompt(options.task)
        self._client = openai.OpenAI(
            base_url=options.base_url, api_key=options.api_key or "not-needed", timeout=TIMEOUT, max_retries=1
        )
        self._recent: dict[str | None, deque[str]] = {}
        self._fresh: dict[str | None, int] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> SecondOpinion | None:
        options = OpinionOptions.from_settings(settings)
        return cls(options) if options is not None else None

    def handle(self, event: Event) -> None:
        if not isinstance(event, CommentaryFinished) or event.suppressed:
            return
        camera = event.camera.id if event.camera else None
        self._recent.setdefault(camera, deque(maxlen=WINDOW)).append(event.text)
        self._fresh[camera] = self._fresh.get(camera, 0) + 1
        if self._fresh[camera] >= self.options.every:
            self._fresh[camera] = 0
            self._ask(event, self._recent[camera])

    def ended(self) -> None:
        self._client.close()

    def _ask(self, about: CommentaryFinished, recent: deque[str]) -> None:
        lines = "\n".join(f"- {text}" for text in recent)
        t, camera = about.t, about.camera
        try:
            reply = self._client.chat.completions.create(
                model=self.options.model,
                messages=[{"role": "system", "content": self.prompt}, {"role": "user", "content": lines}],
                max_tokens=120,
                temperature=0.2,
            )
        except Exception as exc:  # a second opinion never stops the commentary
            where = mask_url(self.options.base_url)
            message = f"second opinion from {where} failed: {type(exc).__name__}"
            self.publish(ErrorEvent(t=t, camera=camera, message=message))
            return
        text = (reply.choices[0].message.content or "").strip() if reply.choices else ""
        if text:
            alert = self.options.task == "alert" and text.upper().startswith("ALERT")
            self.publish(Opinion(t=t, camera=camera, task=self.options.task, text=text, alert=alert))
