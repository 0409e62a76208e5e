"""Command-line flags generated from Settings, so every flag has its ``ONLOOKER_*`` twin by construction."""

from __future__ import annotations

import argparse
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pipeline.config import Settings

DESCRIPTION = """Onlooker watches live video and talks about it.

Without --headless it starts the web app. With --headless --source PATH_OR_URL it prints
timestamped commentary to stdout as it streams. Every flag can also be set as an environment
variable ONLOOKER_<FLAG> (e.g. --base-url -> ONLOOKER_BASE_URL), as a key in the settings file
(--config; base_url: ...) or in a .env file. Flags win over the environment, which wins over the
settings file, which wins over .env."""


def _scalar_type(annotation: Any) -> Any:
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python app.py", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind = _scalar_type(field.annotation)
        env = f"ONLOOKER_{name.upper()}"
        default = field.default if not isinstance(field.default, Path) else field.default.name
        if field.default_factory is not None:
            default = "none"
        help_text = f"{field.description or ''} [env {env}; default {default}]".strip()
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif get_origin(kind) is list:
            parser.add_argument(flag, action="append", default=None, help=help_text, metavar=name.upper())
        else:
            metavar = name.upper()
            parser.add_argument(
                flag, type=kind if kind in (int, float) else str, default=None, help=help_text, metavar=metavar
            )
    return parser


def parse_overrides(argv: list[str] | None = None) -> dict[str, Any]:
    """Flags the user actually gave (None for the rest, so env vars and .env still apply)."""
    return vars(build_parser().parse_args(argv))
