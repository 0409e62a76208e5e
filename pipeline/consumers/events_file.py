"""``--events FILE``: every bus event as one JSON line, flushed per line, so a crash loses nothing
already written and ``tail -f`` shows the session live."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.consumers.base import Consumer
from pipeline.errors import OnlookerError
from pipeline.events import Event


class EventLog:
    """The JSON Lines contract: ``type`` first, then the event's fields (``camera`` included), a line
    per event, flushed as written. Shared by ``--events`` and the recorder's ``events.jsonl``."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115  # closed in close(), by its owner

    def write(self, event: Event) -> None:
        self._file.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class EventsFile(Consumer):
    """``--events FILE``: the session's events in the JSON Lines contract (``EventLog``)."""

    name = "events-file"
    queue_size = 100_000

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        try:
            self._log = EventLog(Path(path))  # closed in ended(), on the consumer's thread
        except OSError as exc:
            raise OnlookerError(f"--events: cannot write {path}: {exc.strerror or exc}") from None

    def handle(self, event: Event) -> None:
        self._log.write(event)

    def ended(self) -> None:
        self._log.close()
