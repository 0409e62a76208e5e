"""Presets, profiles and settings: valid files load, broken ones fail with a message naming the place."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.backends.base import create_backend
from pipeline.config import PRESETS_FILE, load_presets, load_settings, pick
from pipeline.errors import BackendError, ConfigError
from pipeline.prompts import build_prompt, load_profiles


def test_shipped_presets_and_profiles_load():
    presets = load_presets()
    assert {"beast", "sniper", "owl", "sentry"} <= set(presets.presets)
    assert presets.presets["sentry"].heartbeat == 0  # speaks only on change
    assert presets.presets["sniper"].max_frames < presets.presets["beast"].max_frames
    profiles = load_profiles()
    assert {"sports", "narrator", "security", "nature", "sarcastic"} <= set(profiles)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("default: a\npresets:\n  a: {capture_rate: 2}\n", ["presets.a.capture_rate", "unknown key", "capture_fps"]),
        ("default: a\npresets:\n  a: {capture_fps: -1}\n", ["presets.a.capture_fps", "greater than 0"]),
        ("default: nope\npresets:\n  a: {}\n", ["default", "'nope'", "allowed: a"]),
        ("default: a\npresets: [1, 2\n", ["not valid YAML"]),
        ("- just\n- a list\n", ["mapping"]),
    ],
)
def test_malformed_presets_name_file_key_and_allowed_values(tmp_path: Path, text: str, expected: list[str]):
    path = tmp_path / "presets.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_presets(path)
    message = str(err.value)
    assert str(path) in message
    for piece in expected:
        assert piece in message


def test_malformed_profile_names_file_and_key(tmp_path: Path):
    (tmp_path / "good.yaml").write_text("name: Good\nsystem_prompt: Describe.\n")
    (tmp_path / "bad.yaml").write_text("name: Bad\nsystem_prompt: x\nvoice: {speed: 3}\ntemperature: 9\n")
    with pytest.raises(ConfigError) as err:
        load_profiles(tmp_path)
    message = str(err.value)
    assert "bad.yaml: voice.speed: unknown key; allowed keys: engine_voice, rate, pitch" in message
    assert "bad.yaml: temperature" in message


def test_empty_profiles_dir_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="no profile files"):
        load_profiles(tmp_path)


def test_unknown_names_list_the_allowed_ones():
    with pytest.raises(ConfigError, match="unknown preset 'turbo'; allowed: balanced, beast, owl, sentry, sniper"):
        load_settings(preset="turbo").tuning(load_presets())
    with pytest.raises(ConfigError, match="unknown profile 'x'"):
        pick("x", load_profiles(), "profile", "--profile")
    with pytest.raises(ConfigError, match="unknown backend 'gpt5'; allowed: auto, opencv, transformers"):
        create_backend(load_settings(backend="gpt5"))


def test_a_server_url_picks_the_openai_backend_and_an_unreachable_one_says_so():
    import socket

    with socket.socket() as bound:  # a port that is bound but not listening: connection refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}/v1"
        with pytest.raises(BackendError, match=r"cannot reach the OpenAI-compatible server at http://127\.0\.0\.1"):
            create_backend(load_settings(base_url=url))
    with pytest.raises(ConfigError, match="--backend openai needs --base-url"):
        create_backend(load_settings(backend="openai"))


def test_env_vars_and_dotenv_feed_settings_and_flags_win(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("ONLOOKER_PRESET=owl\nONLOOKER_WINDOW=5\n")
    monkeypatch.setenv("ONLOOKER_BACKEND", "opencv")
    settings = load_settings()
    assert settings.preset == "owl" and settings.backend == "opencv" and settings.window == 5
    tuning = settings.tuning(load_presets(PRESETS_FILE))
    assert tuning.window == 5 and tuning.capture_fps == load_presets().presets["owl"].capture_fps
    assert load_settings(preset="sniper", window=None).preset == "sniper"


def test_invalid_setting_names_flag_and_variable():
    with pytest.raises(ConfigError, match=r"--capture-fps / ONLOOKER_CAPTURE_FPS: .*greater than 0"):
        load_settings(capture_fps=0)
    with pytest.raises(ConfigError, match="--device / ONLOOKER_DEVICE"):
        load_settings(device="tpu")


def test_prompt_carries_context_instructions_and_trigger():
    profile = load_profiles()["sports"]
    parts = build_prompt(
        profile,
        frame_count=4,
        span_seconds=6,
        recent=["A goal!"],
        instructions=["focus on the keeper"],
        trigger="scene_cut",
    )
    assert profile.system_prompt.strip() in parts.system and "Style:" in parts.system
    for piece in ("4 frames", "6 s", "A goal!", "focus on the keeper", "scene just changed"):
        assert piece in parts.user
    single = build_prompt(profile, frame_count=1, span_seconds=0, recent=[], instructions=[], trigger="active")
    assert "current frame" in single.user and "already said" not in single.user
