"""The settings file (``onlooker.yaml``): where it is, reading it as a source of Settings, and the web app's
Save as default, which writes into it.

Why a file besides ``.env``: ``.env`` belongs to the folder the app is started from, while settings that
should stay (a profile, a camera, watch rules) belong to the user, so the file is found in the working
directory first and then in the user's config folder, and the web page can write it. It sits between the
environment and ``.env``: flags > environment > settings file > ``.env`` > defaults
(``Settings.settings_customise_sources``). Its keys are the flags' names with underscores; a key it does
not know, or a bad value, is an error naming the file and the key, never silently ignored. A relative path in
a path setting (``record_dir: recordings``) is read from the file's folder, as Compose reads its files': the
user's file is found whatever folder the app starts in, and must mean the same thing from each.

Save as default writes only ``UI_KEYS``, so no secret (API keys, logins, the webhook's secret) can reach
the file from the page, and a source URL loses its user name and password on the way.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import sys
import tempfile
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from pipeline.errors import ConfigError

FILE_NAME = "onlooker.yaml"
UI_KEYS = ("source_kind", "source", "profile", "preset", "tts", "tts_voice", "mute", "live_sync", "watch")
HEADER = (
    "# Onlooker's settings. Keys are the flags' names with underscores (python app.py --help lists them);\n"
    "# flags and ONLOOKER_* variables win over this file, and this file wins over .env.\n"
    "# The web app's Save as default rewrites this file: it keeps your keys, but not your comments.\n"
)


def user_config_dir() -> Path:
    """Onlooker's folder in the user's config directory: ``$XDG_CONFIG_HOME/onlooker`` (``~/.config/onlooker``)
    on Linux, ``~/Library/Application Support/onlooker`` on macOS, ``%APPDATA%\\onlooker`` on Windows."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "onlooker"


def found_settings_file() -> Path | None:
    """The settings file read when ``--config`` names none: ``onlooker.yaml`` in the working directory,
    else the user's; None when neither exists (no file is fine)."""
    for path in (Path.cwd() / FILE_NAME, user_config_dir() / FILE_NAME):
        if path.is_file():
            return path
    return None


def holding_file(key: str, given: Path | None) -> Path | None:
    """The settings file in use (``given``, else the one found), when it holds ``key``: where to point a user
    whose value for ``key`` is refused after loading (an unknown profile), since it may have come from there."""
    path = given or found_settings_file()
    try:
        return path if path is not None and key in _parse(path, path.read_text(encoding="utf-8")) else None
    except (OSError, ConfigError):
        return None


def save_path(given: Path | None) -> Path:
    """Where Save as default writes: the ``--config`` file, else the file that was read, else the user's
    (never a new file in the working directory, which may be any folder the app happened to start in)."""
    return given or found_settings_file() or user_config_dir() / FILE_NAME


def shown_path(path: Path) -> str:
    """The path as the user would type it anywhere: ``~/.config/onlooker/onlooker.yaml``."""
    path = path.absolute()
    with contextlib.suppress(ValueError):
        return str(Path("~") / path.relative_to(Path.home()))
    return str(path)


def read_settings_file(path: Path, settings_cls: type[BaseSettings]) -> dict[str, Any]:
    """The file's settings, checked: an unreadable file, bad YAML, an unknown key or a bad value is a
    ConfigError naming the file (and the key, with the keys allowed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (--config / ONLOOKER_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    data = _parse(path, text)
    allowed = [name for name in settings_cls.model_fields if name != "config"]
    problems = []
    for key in data:
        if key not in allowed:
            near = str(key).replace("-", "_")
            hint = f"did you mean '{near}'?" if near in allowed else f"allowed keys: {', '.join(allowed)}"
            problems.append(f"{path}: {key}: unknown key; {hint}")
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        _file_only(settings_cls)(**data)
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    return _anchored(data, path.absolute().parent, settings_cls)


def _anchored(data: dict[str, Any], folder: Path, settings_cls: type[BaseSettings]) -> dict[str, Any]:
    """``data`` with each relative path of a path setting made absolute from ``folder`` (``~`` expanded).
    ``source`` and ``model`` are strings (a URL, a hub id) and are left as written."""
    anchored = dict(data)
    for key, value in data.items():
        field = settings_cls.model_fields[key]
        if isinstance(value, str) and value and Path in (field.annotation, *typing.get_args(field.annotation)):
            anchored[key] = str(folder / Path(value).expanduser())  # an absolute path stays itself
    return anchored


def _parse(path: Path, text: str) -> dict[str, Any]:
    """The YAML mapping in ``text`` (an empty file is an empty mapping)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings to values, like 'profile: sports'")
    return data


@functools.cache
def _file_only(settings_cls: type[BaseSettings]) -> type[BaseSettings]:
    """``settings_cls`` reading nothing but its arguments: the file's values are checked on their own, so a bad
    one is blamed on the file, not on a flag or variable of the same name (and env values cannot hide it)."""

    class FileOnly(settings_cls):  # type: ignore[valid-type, misc]
        @classmethod
        def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource, **_: Any
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings,)

    return FileOnly


class SettingsFileSource(PydanticBaseSettingsSource):
    """The settings file as a pydantic-settings source. Which file is itself a setting (``config``): the flag
    or variable comes from the sources above this one (``current_state``), ``.env`` is asked directly since
    it ranks below; with none, the default locations are looked in."""

    def __init__(self, settings_cls: type[BaseSettings], dotenv: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.dotenv = dotenv

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Required by the base class; unused, since ``__call__`` reads the whole file at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        given = self.current_state.get("config") or self.dotenv().get("config")
        path = Path(given) if given else found_settings_file()
        return read_settings_file(path, self.settings_cls) if path is not None else {}


def write_defaults(path: Path, values: Mapping[str, Any]) -> bool:
    """Merge ``values`` (keys from ``UI_KEYS`` only; None removes a key) into the settings file at ``path``,
    atomically: a temporary file in the same folder, then a rename, so a crash leaves the old file or the
    new one, never half of one. Keys the page does not manage stay as they were; a file that does not parse
    is refused rather than overwritten. A symlink is followed, so the file it points to is updated.

    Returns whether the source URL lost a user name, password or secret-looking query parameter."""
    from pipeline.sources.urls import strip_credentials  # here: it loads httpx, which --help need not wait for

    foreign = sorted(set(values) - set(UI_KEYS))
    if foreign:
        raise ValueError(f"Save as default writes only {', '.join(UI_KEYS)}; not {', '.join(foreign)}")
    target = Path(os.path.realpath(path))
    try:
        merged = _parse(target, target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        merged = {}
    updates = dict(values)
    stripped = False
    if updates.get("source"):
        clean = strip_credentials(updates["source"])
        stripped, updates["source"] = clean != updates["source"].strip(), clean
    for key, value in updates.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    text = HEADER + yaml.safe_dump(merged, sort_keys=False, allow_unicode=True, default_flow_style=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if target.exists():  # keep the file's permissions (mkstemp makes it private to the user)
            os.chmod(temporary, stat.S_IMODE(target.stat().st_mode))
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return stripped
