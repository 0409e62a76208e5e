"""The settings file: its place in the precedence chain (flags > environment > file > .env > defaults), where it
is looked for, its errors, and Save as default's merge, atomic write and refusal to write any secret."""

from __future__ import annotations

import itertools
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pytest
import yaml

from pipeline.backends.base import Choice
from pipeline.config import load_presets, load_settings
from pipeline.errors import ConfigError
from pipeline.prompts import load_profiles
from pipeline.runconfig import load_run_config
from pipeline.settings_file import (
    FILE_NAME,
    UI_KEYS,
    found_settings_file,
    save_path,
    shown_path,
    user_config_dir,
    write_defaults,
)
from tests.helpers.scripted_backend import ScriptedBackend
from webui import handlers
from webui.app import build_demo
from webui.sessions import SessionManager


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A clean start: the working directory and the user's config folder are empty temporary folders, and no
    ONLOOKER_* variable is set. Yields the working directory."""
    for name in list(os.environ):
        if name.upper().startswith("ONLOOKER_"):
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    yield work


def user_file() -> Path:
    path = user_config_dir() / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --- precedence ---------------------------------------------------------------------------------------------

LAYERS = ("flag", "env", "file", "dotenv")  # highest first; "default" is below them all


def set_layer(layer: str, value: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Give ``profile`` the value ``value`` in one layer; returns the flags to pass (for the flag layer)."""
    if layer == "flag":
        return {"profile": value}
    if layer == "env":
        monkeypatch.setenv("ONLOOKER_PROFILE", value)
    elif layer == "file":
        user_file().write_text(f"profile: {value}\n")
    elif layer == "dotenv":
        Path(".env").write_text(f"ONLOOKER_PROFILE={value}\n")
    return {}


@pytest.mark.parametrize(("higher", "lower"), list(itertools.combinations([*LAYERS, "default"], 2)))
def test_each_layer_wins_over_every_layer_below_it(home: Path, monkeypatch: pytest.MonkeyPatch, higher, lower):
    flags = set_layer(higher, "sports", monkeypatch)
    if lower != "default":
        flags |= set_layer(lower, "nature", monkeypatch)
    assert load_settings(**flags).profile == "sports", f"{higher} should win over {lower}"


def test_the_whole_chain_at_once(home: Path, monkeypatch: pytest.MonkeyPatch):
    """Four keys, each set in the layers from the bottom up to one: each comes from the highest layer that has it."""
    Path(".env").write_text("ONLOOKER_PROFILE=nature\nONLOOKER_PRESET=owl\nONLOOKER_TTS=none\nONLOOKER_PORT=7001\n")
    user_file().write_text("profile: security\npreset: sentry\ntts: espeak\n")
    monkeypatch.setenv("ONLOOKER_PROFILE", "sarcastic")
    monkeypatch.setenv("ONLOOKER_PRESET", "beast")
    settings = load_settings(profile="sports")
    assert (settings.profile, settings.preset, settings.tts, settings.port) == ("sports", "beast", "espeak", 7001)
    assert load_settings().live_sync is True  # set nowhere: the default


def test_the_file_is_named_by_flag_env_or_dotenv_and_a_named_file_must_exist(home: Path, monkeypatch):
    (home / "a.yaml").write_text("preset: owl\n")
    (home / "b.yaml").write_text("preset: sniper\n")
    (home / "c.yaml").write_text("preset: beast\n")
    user_file().write_text("preset: sentry\n")
    assert load_settings().preset == "sentry"  # the default location
    Path(".env").write_text("ONLOOKER_CONFIG=c.yaml\n")
    assert load_settings().preset == "beast"
    monkeypatch.setenv("ONLOOKER_CONFIG", "b.yaml")
    assert load_settings().preset == "sniper"
    assert load_settings(config="a.yaml").preset == "owl"
    with pytest.raises(ConfigError, match=r"missing\.yaml: file not found \(--config / ONLOOKER_CONFIG\)"):
        load_settings(config="missing.yaml")


def test_no_file_anywhere_is_fine(home: Path):
    assert found_settings_file() is None
    assert load_settings().profile == "narrator"


def test_list_values_from_the_file(home: Path):
    user_file().write_text('watch: ["door=a person at the door", "a car in the drive"]\nnotify: ntfy://a ntfy://b\n')
    settings = load_settings()
    assert settings.watch == ["door=a person at the door", "a car in the drive"]
    assert settings.notify == ["ntfy://a", "ntfy://b"]


def test_relative_paths_in_the_file_are_read_from_its_folder(home: Path, tmp_path: Path):
    """The user's file is found from any working directory: ``recordings`` means the folder beside it."""
    path = user_file()
    path.write_text(f"record_dir: recordings\nevents: ~/events.jsonl\nexport: {tmp_path}/out.mp4\nsource: clip.mp4\n")
    settings = load_settings()
    assert settings.record_dir == path.parent / "recordings"
    assert settings.events == Path.home() / "events.jsonl" and settings.export == tmp_path / "out.mp4"
    assert settings.source == "clip.mp4"  # a path, a URL or a device: as written, from the working directory
    assert load_settings(record_dir=Path("here")).record_dir == Path("here")  # a flag's: from the working directory


# --- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "what"), [("profile", "profile"), ("preset", "preset"), ("backend", "backend")])
def test_a_name_refused_after_loading_points_at_the_file_that_holds_it(home: Path, key: str, what: str):
    """An unknown profile is found only once the profiles are loaded, where the value's origin is not known:
    the message names the file too when the file holds the key."""
    path = user_file()
    path.write_text(f"{key}: nosuch\n")
    in_file = f"^--{key} / ONLOOKER_{key.upper()} / {key} in .*onlooker.yaml: unknown {what}"
    with pytest.raises(ConfigError, match=in_file):
        load_run_config(load_settings())
    path.write_text("")
    with pytest.raises(ConfigError, match=f"^--{key} / ONLOOKER_{key.upper()}: unknown {what}"):
        load_run_config(load_settings(**{key: "nosuch"}))


def test_an_unknown_key_names_the_file_and_the_key_and_lists_the_allowed_ones(home: Path):
    path = user_file()
    path.write_text("profile: sports\nprofil: sports\nmax-tokens: 40\n")
    with pytest.raises(ConfigError) as err:
        load_settings()
    lines = str(err.value).splitlines()
    assert lines[0].startswith(f"{path}: profil: unknown key; allowed keys: ")
    assert "profile, instructions" in lines[0] and "watch" in lines[0]
    assert "config" not in lines[0].split("allowed keys: ")[1].split(", ")  # a file does not name another one
    assert lines[1] == f"{path}: max-tokens: unknown key; did you mean 'max_tokens'?"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_tokens: 2\n", "max_tokens: Input should be greater than or equal to 4"),
        ("live_sync: perhaps\n", "live_sync: Input should be a valid boolean"),
        ("source_kind: tv\n", "source_kind: String should match pattern"),
        ("profile: [a, b]\n", "profile: Input should be a valid string"),
        ("profile: sports\n  preset: owl\n", "not valid YAML"),
        ("- profile\n- sports\n", "expected a mapping of settings to values"),
    ],
)
def test_a_bad_value_names_the_file_and_the_key(home: Path, monkeypatch, text: str, expected: str):
    path = user_file()
    path.write_text(text)
    monkeypatch.setenv("ONLOOKER_MAX_TOKENS", "40")  # a good value above it does not hide the file's mistake
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith(f"{path}: ")
    assert expected in str(err.value)


def test_an_empty_file_is_no_settings(home: Path):
    user_file().write_text("# nothing yet\n")
    assert load_settings().profile == "narrator"


# --- where ----------------------------------------------------------------------------------------------------


def test_default_locations(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert user_config_dir() == tmp_path / "config" / "onlooker"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_config_dir() == tmp_path / "home" / ".config" / "onlooker"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert user_config_dir() == tmp_path / "home" / "Library" / "Application Support" / "onlooker"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("APPDATA", str(tmp_path / "roaming"))
    assert user_config_dir() == tmp_path / "roaming" / "onlooker"


def test_the_working_directory_comes_first_and_saving_goes_where_the_file_came_from(home: Path, tmp_path: Path):
    users = user_config_dir() / FILE_NAME
    assert save_path(None) == users  # nothing yet: the user's folder, never the working directory
    assert not users.exists()  # deciding where creates nothing
    user_file().write_text("preset: owl\n")
    assert found_settings_file() == users
    assert save_path(None) == users
    (home / FILE_NAME).write_text("preset: sniper\n")
    assert found_settings_file() == home / FILE_NAME
    assert load_settings().preset == "sniper"
    assert save_path(None) == home / FILE_NAME  # it was read from there
    assert save_path(tmp_path / "given.yaml") == tmp_path / "given.yaml"


def test_paths_are_shown_as_the_user_types_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert shown_path(tmp_path / ".config" / "onlooker" / FILE_NAME) == "~/.config/onlooker/onlooker.yaml"
    assert shown_path(Path("/etc/onlooker.yaml")) == "/etc/onlooker.yaml"
    monkeypatch.chdir(tmp_path)
    assert shown_path(Path("mine.yaml")) == "~/mine.yaml"  # a relative --config, said in full


# --- writing --------------------------------------------------------------------------------------------------


def test_saving_merges_and_keeps_what_the_page_does_not_manage(home: Path):
    path = user_file()
    path.write_text("# my camera setup\nwatch_interval: 12\nprofile: nature\ntts_voice: en-gb\nmqtt: mqtt://h\n")
    write_defaults(path, {"profile": "sports", "preset": "owl", "watch": ["door=a person at the door"]})
    write_defaults(path, {"tts_voice": None, "mute": True})  # None: back to the default (the key goes)
    data = yaml.safe_load(path.read_text())
    assert data == {
        "watch_interval": 12,
        "profile": "sports",
        "mqtt": "mqtt://h",
        "preset": "owl",
        "watch": ["door=a person at the door"],
        "mute": True,
    }
    settings = load_settings()
    assert (settings.profile, settings.preset, settings.watch, settings.mute) == (
        "sports",
        "owl",
        ["door=a person at the door"],
        True,
    )


def test_saving_is_atomic_and_a_failed_write_leaves_the_old_file(home: Path, monkeypatch: pytest.MonkeyPatch):
    path = user_file()
    path.write_text("profile: nature\n")
    path.chmod(0o640)
    write_defaults(path, {"preset": "owl"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the file's permissions are kept
    before = path.read_text()

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        write_defaults(path, {"preset": "beast"})
    assert path.read_text() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [FILE_NAME]  # no temporary file left behind


def test_saving_creates_the_folder_and_follows_a_symlink(home: Path, tmp_path: Path):
    real = tmp_path / "dotfiles" / "onlooker.yaml"
    real.parent.mkdir()
    real.write_text("preset: owl\n")
    link = user_config_dir() / FILE_NAME
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    write_defaults(link, {"profile": "sports"})
    assert link.is_symlink()
    assert yaml.safe_load(real.read_text()) == {"preset": "owl", "profile": "sports"}
    fresh = tmp_path / "new" / "deep" / FILE_NAME
    write_defaults(fresh, {"profile": "sports"})
    assert yaml.safe_load(fresh.read_text()) == {"profile": "sports"}


def test_a_broken_file_is_not_overwritten(home: Path):
    path = user_file()
    path.write_text("profile: [sports\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        write_defaults(path, {"profile": "nature"})
    assert path.read_text() == "profile: [sports\n"


def test_only_the_pages_keys_can_be_written(home: Path):
    for secret in ("api_key", "tts_api_key", "auth", "webhook_secret", "mqtt"):
        with pytest.raises(ValueError, match=f"not {secret}"):
            write_defaults(user_config_dir() / FILE_NAME, {"profile": "sports", secret: "hunter2"})
    assert not (user_config_dir() / FILE_NAME).exists()
    assert set(UI_KEYS).isdisjoint({"api_key", "tts_api_key", "auth", "webhook_secret", "mqtt", "webhook", "notify"})


@pytest.mark.parametrize(
    ("given", "saved"),
    [
        ("rtsp://admin:hunter2@192.168.1.20:554/stream1", "rtsp://192.168.1.20:554/stream1"),
        ("http://cam.local/video.mjpg?user=admin&pwd=hunter2&res=hd", "http://cam.local/video.mjpg?res=hd"),
        ("https://cdn.example/live.m3u8?token=hunter2", "https://cdn.example/live.m3u8"),
        ("rtmp://user:hun@ter2@host/live", "rtmp://host/live"),
    ],
)
def test_a_source_url_loses_its_credentials(home: Path, given: str, saved: str):
    path = user_config_dir() / FILE_NAME
    assert write_defaults(path, {"source": given}) is True
    assert yaml.safe_load(path.read_text())["source"] == saved
    assert "hunter2" not in path.read_text() and "ter2" not in path.read_text()
    assert write_defaults(path, {"source": "rtsp://cam.local/stream"}) is False


# --- the page ---------------------------------------------------------------------------------------------------

SECRETS = {
    "api_key": "sk-api-secret",
    "tts_api_key": "sk-tts-secret",
    "auth": "ann:auth-secret",
    "webhook_secret": "hook-secret",
    "mqtt": "mqtt://broker:mqtt-secret@127.0.0.1:1",
    "source": "rtsp://admin:source-secret@127.0.0.1:1/stream",
}


@pytest.fixture
def manager_for(home: Path) -> Iterator:
    """A SessionManager on settings from the usual chain (flags given here), closed afterwards."""
    made: list[SessionManager] = []

    def make(**flags: object) -> SessionManager:
        settings = load_settings(**flags)
        made.append(SessionManager(settings, Choice(ScriptedBackend(), "test"), load_presets(), load_profiles()))
        return made[-1]

    yield make
    for manager in made:
        manager.close_all()


def test_save_as_default_writes_the_page_and_never_a_secret(home: Path, manager_for, monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(gr, "Info", said.append)
    manager = manager_for(tts="espeak", **SECRETS)
    rules = manager.rules("tab")
    assert rules.add("door=a person at the door") and rules.add("motion on the left")
    rules.act("pause", "motion-left")  # a paused rule is still the tab's rule
    url = "rtsp://admin:typed-secret@127.0.0.1:1/stream?token=typed-token&res=hd"
    handlers.save_defaults(manager, "tab", "URL", url, "security", "sentry", "espeak", True, False)

    path = user_config_dir() / FILE_NAME
    text = path.read_text()
    for secret in [*SECRETS.values(), "typed-secret", "typed-token", "secret"]:
        assert secret not in text, f"{secret!r} was written:\n{text}"
    data = yaml.safe_load(text)
    assert data == {
        "source_kind": "url",
        "profile": "security",
        "preset": "sentry",
        "mute": True,
        "live_sync": False,
        "watch": ["door=a person at the door", "motion-left=motion on the left"],
        "source": "rtsp://127.0.0.1:1/stream?res=hd",
        "tts": "espeak",
    }
    assert said == [
        f"Saved as defaults in {shown_path(path)}. The URL's user name and password were left out (they are never "
        "saved): type them again next time, or keep the whole URL in ONLOOKER_SOURCE or --source."
    ]


def test_the_engine_auto_picked_is_saved_as_auto_and_a_picked_voice_is_kept(home: Path, manager_for, monkeypatch):
    monkeypatch.setattr(gr, "Info", lambda text: None)
    manager = manager_for()  # --tts auto: the scripted backend has no voice, so espeak
    assert manager.speech.default == "espeak"
    path = user_config_dir() / FILE_NAME
    handlers.save_defaults(manager, "tab", "Webcam", "", "narrator", "balanced", "espeak", False, True)
    data = yaml.safe_load(path.read_text())
    assert (data["tts"], "tts_voice" in data, data["source_kind"], "source" in data) == ("auto", False, "webcam", False)
    manager.set_voice("tab", "espeak", "en-gb")
    handlers.save_defaults(manager, "tab", "Upload", None, "narrator", "balanced", "espeak", False, True)
    assert yaml.safe_load(path.read_text())["tts_voice"] == "en-gb"


def test_save_as_default_writes_the_config_file_it_was_given(home: Path, manager_for, monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(gr, "Info", said.append)
    given = home / "cameras" / "garage.yaml"
    given.parent.mkdir()
    given.write_text("watch_interval: 20\n")
    manager = manager_for(config=str(given))
    handlers.save_defaults(manager, "tab", "Upload", None, "nature", "owl", None, False, True)
    assert yaml.safe_load(given.read_text())["profile"] == "nature"
    assert yaml.safe_load(given.read_text())["watch_interval"] == 20
    assert not (user_config_dir() / FILE_NAME).exists() and not (home / FILE_NAME).exists()
    assert said == [f"Saved as defaults in {given}."]
    assert load_settings(config=str(given)).profile == "nature"


def test_a_failed_save_is_said_on_the_page(home: Path, manager_for):
    manager = manager_for()
    user_file().write_text("profile: [broken\n")
    with pytest.raises(gr.Error, match=r"Could not save the defaults: .*not valid YAML"):
        handlers.save_defaults(manager, "tab", "Upload", None, "narrator", "balanced", None, False, True)


def components(demo: gr.Blocks) -> dict[str, object]:
    return {block.elem_id: block for block in demo.blocks.values() if getattr(block, "elem_id", None)}


def test_every_control_the_page_saves_starts_from_its_setting(home: Path, manager_for):
    user_file().write_text(
        "source_kind: url\nsource: rtsp://cam.local/stream\nprofile: security\npreset: sentry\nmute: true\n"
        "live_sync: false\ntts_voice: en-gb\nwatch: ['door=a person at the door']\n"
    )
    manager = manager_for(tts="espeak")
    page = components(build_demo(manager))
    assert (page["source-mode"].value, page["url"].value, page["url"].visible, page["upload"].visible) == (
        "URL",
        "rtsp://cam.local/stream",
        True,
        False,
    )
    assert (page["profile"].value, page["preset"].value) == ("security", "sentry")
    assert (page["speech-engine"].value, page["voice"].value) == ("espeak", "en-gb")
    assert (page["mute"].value, page["sync"].value) == (True, False)
    assert 'data-rule="door"' in page["rules"].value
    assert "save-default" in page
    assert manager.voice_prefs("tab").muted  # the server mutes a new tab's speech too, not only the box


def test_a_shared_app_offers_no_save_and_shows_no_saved_url(home: Path, manager_for):
    user_file().write_text("source_kind: url\nsource: rtsp://cam.local/stream\n")
    page = components(build_demo(manager_for(share=True)))
    assert "save-default" not in page
    assert page["source-mode"].value == "URL" and not page["url"].value


def test_a_source_flag_alone_opens_the_url_box(home: Path, manager_for):
    page = components(build_demo(manager_for(source="http://cam.local/video.mjpg")))
    assert (page["source-mode"].value, page["url"].value) == ("URL", "http://cam.local/video.mjpg")
    page = components(build_demo(manager_for()))
    assert (page["source-mode"].value, page["upload"].visible, page["url"].visible) == ("Upload", True, False)
