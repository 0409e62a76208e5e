"""A second model's take on the commentary: every N comments, the recent ones go to a text model
on an OpenAI-compatible server (summarise them, translate them, or decide whether something needs
attention), and its answer goes on the bus as an ``Opinion`` event.

It runs on its own thread and never holds up the commentary: while it is waiting for an answer,
new comments keep arriving and are part of the next request.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError
from pipeline.events import CommentaryFinished, ErrorEvent, EventBus, Opinion
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


class SecondOpinion:
    """Owns the ``second-opinion`` thread; it ends when the bus closes or ``stop`` is called."""

    def __init__(self, bus: EventBus, options: OpinionOptions) -> None:
        import openai

        self.bus = bus
        self.options = options
        self.prompt = task_prompt(options.task)
        self._client = openai.OpenAI(
            base_url=options.base_url, api_key=options.api_key or "not-needed", timeout=TIMEOUT, max_retries=1
        )
        self._sub = bus.subscribe("second-opinion", maxsize=10_000)
        self._recent: deque[str] = deque(maxlen=WINDOW)
        self._thread = threading.Thread(target=self._run, name="second-opinion", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._sub.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._client.close()

    def _run(self) -> None:
        fresh = 0
        for event in self._sub:
            if not isinstance(event, CommentaryFinished) or event.suppressed:
                continue
            self._recent.append(event.text)
            fresh += 1
            if fresh >= self.options.every:
                fresh = 0
                self._ask(event.t)

    def _ask(self, t: float) -> None:
        lines = "\n".join(f"- {text}" for text in self._recent)
        try:
            reply = self._client.chat.completions.create(
                model=self.options.model,
                messages=[{"role": "system", "content": self.prompt}, {"role": "user", "content": lines}],
                max_tokens=120,
                temperature=0.2,
            )
        except Exception as exc:  # a second opinion never stops the commentary
            where = mask_url(self.options.base_url)
            self.bus.publish(ErrorEvent(t=t, message=f"second opinion from {where} failed: {type(exc).__name__}"))
            return
        text = (reply.choices[0].message.content or "").strip() if reply.choices else ""
        if text:
            alert = self.options.task == "alert" and text.upper().startswith("ALERT")
            self.bus.publish(Opinion(t=t, task=self.options.task, text=text, alert=alert))
