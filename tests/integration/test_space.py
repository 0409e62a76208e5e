"""The Hugging Face Space set-up: the README's front matter against the documented configuration keys, the
Debian packages it asks for, and the app started the way a Space starts it (its environment variables)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from pipeline.config import load_settings
from pipeline.space import detect_space, is_exposed, space_notes, space_overrides
from tests.helpers.mjpeg_server import free_port

ROOT = Path(__file__).resolve().parents[2]
# https://huggingface.co/docs/hub/spaces-config-reference (the keys and hardware flavours it lists)
DOCUMENTED_KEYS = {
    "title", "emoji", "colorFrom", "colorTo", "sdk", "python_version", "sdk_version", "suggested_hardware",
    "suggested_storage", "app_file", "app_port", "base_path", "fullWidth", "header", "short_description",
    "models", "datasets", "tags", "thumbnail", "pinned", "hf_oauth", "hf_oauth_scopes",
    "hf_oauth_expiration_minutes", "hf_oauth_authorized_org", "disable_embedding", "startup_duration_timeout",
    "custom_headers", "preload_from_hub", "license",
}  # fmt: skip
HARDWARE = {
    "cpu-basic", "cpu-upgrade", "t4-small", "t4-medium", "l4x1", "l4x4", "l40sx1", "l40sx4", "l40sx8",
    "a10g-small", "a10g-large", "a10g-largex2", "a10g-largex4", "a100-large", "a100x4", "a100x8",
}  # fmt: skip
COLOURS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
SPACE = {"SYSTEM": "spaces", "SPACE_ID": "someone/onlooker", "SPACE_HOST": "someone-onlooker.hf.space"}


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), "a Space reads its configuration from the README's first lines"
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_the_front_matter_uses_only_documented_keys_with_valid_values():
    meta = front_matter()
    assert set(meta) <= DOCUMENTED_KEYS, set(meta) - DOCUMENTED_KEYS
    assert meta["sdk"] == "gradio" and (ROOT / meta["app_file"]).is_file()
    pinned = re.search(r"^gradio==(\S+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert pinned and meta["sdk_version"] == pinned.group(1), "the Space runs the Gradio the requirements pin"
    assert isinstance(meta["python_version"], str) and tuple(map(int, meta["python_version"].split("."))) >= (3, 11)
    assert meta["suggested_hardware"] in HARDWARE
    assert {meta["colorFrom"], meta["colorTo"]} <= COLOURS
    assert re.fullmatch(r"\d+[mh]", meta["startup_duration_timeout"])
    assert len(meta["short_description"]) <= 60
    for repo in meta["preload_from_hub"]:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", repo.split()[0]) and repo.split()[0] in meta["models"]


def test_packages_txt_names_the_debian_packages_the_app_needs():
    packages = (ROOT / "packages.txt").read_text().split()
    assert set(packages) == {"ffmpeg", "espeak-ng"}
    if shutil.which("apt-cache"):
        for package in packages:
            shown = subprocess.run(["apt-cache", "show", package], capture_output=True, text=True, timeout=60)
            assert shown.returncode == 0 and f"Package: {package}" in shown.stdout


def test_a_space_is_recognised_listens_where_its_proxy_looks_and_counts_as_shared():
    assert detect_space({}) is None
    space = detect_space(SPACE)
    assert space is not None and space.id == "someone/onlooker" and not space.zero_gpu
    assert space_overrides(space, {}, SPACE) == {"host": "0.0.0.0", "port": 7860}
    assert space_overrides(space, {"port": 9000}, {**SPACE, "ONLOOKER_HOST": "::"}) == {}
    settings = load_settings(host="127.0.0.1")
    assert not is_exposed(settings, {}) and is_exposed(settings, SPACE), "a Space is public whatever the host"
    notes = space_notes(space, has_login=False)
    assert any("ONLOOKER_AUTH" in n and "secret" in n for n in notes)
    zero = detect_space({**SPACE, "SPACES_ZERO_GPU": "true"})
    assert zero is not None and zero.zero_gpu
    assert any("dedicated GPU" in n for n in space_notes(zero, has_login=True))
    assert not any("ONLOOKER_AUTH" in n for n in space_notes(zero, has_login=True))


def test_the_app_started_as_a_space_says_so_and_serves_on_all_interfaces(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONLOOKER_")}
    env.update(SPACE, SPACES_ZERO_GPU="true", ONLOOKER_PORT=str(port), ONLOOKER_RECORD_DIR=str(tmp_path))
    app = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py")], env=env, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        lines = []
        deadline = time.monotonic() + 120
        assert app.stderr is not None
        while time.monotonic() < deadline and not any(line.startswith("· ready") for line in lines):
            line = app.stderr.readline()
            assert line, "the app ended before it was ready:\n" + "".join(lines)
            lines.append(line)
        log = "".join(lines)
        assert "running as the Hugging Face Space someone/onlooker" in log
        assert "ONLOOKER_AUTH" in log and "dedicated GPU" in log
        outward = socket.gethostbyname(socket.gethostname())  # listening on 0.0.0.0: reachable beyond loopback
        page = httpx.get(f"http://{outward}:{port}/", timeout=30).text
        assert "This Space:" in page and "dedicated GPU" in page, "the page says what the owner must fix"
    finally:
        app.terminate()
        app.wait(30)


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_zero_gpu_off_spellings(value):
    space = detect_space({**SPACE, "SPACES_ZERO_GPU": value})
    assert space is not None and not space.zero_gpu
