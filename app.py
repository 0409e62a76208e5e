"""Onlooker: watch live video and talk about it. ``python app.py --help`` lists every flag.

Wiring only: parse flags, then run headless or launch the web UI. Heavy imports (torch, gradio)
happen inside the chosen path so ``--help`` stays instant.
"""

from __future__ import annotations

import logging
import sys

from pipeline.cli import parse_overrides
from pipeline.errors import OnlookerError
from pipeline.signals import Stopped, stop_signals


def main(argv: list[str] | None = None) -> int:
    overrides = parse_overrides(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from pipeline.config import load_settings
        from pipeline.space import detect_space, space_overrides

        overrides.update(space_overrides(detect_space(), overrides))  # a Space listens where its proxy looks

        settings = load_settings(**overrides)
        if settings.history or settings.history_search is not None:
            from pipeline.history_cli import show_history

            return show_history(settings, sys.stdout)
        if settings.headless:
            from pipeline.headless import run_headless

            return run_headless(settings)
        from webui.app import launch

        return launch(settings)
    except Stopped as stop:  # while still starting (loading a model, say): what was made is closed on the way out
        print(f"· stopped ({stop.signame})", file=sys.stderr)
        return 0
    except OnlookerError as exc:
        for line in str(exc).splitlines() or ["unknown error"]:
            print(f"onlooker: error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    with stop_signals():  # SIGTERM (docker stop, systemd) ends a run as cleanly as Ctrl-C: pipeline.signals
        sys.exit(main())
