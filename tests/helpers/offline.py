"""Run a snippet in a fresh interpreter with the Hugging Face hub offline and an empty cache.

A fresh interpreter, because huggingface_hub reads HF_HUB_OFFLINE and the cache location from the
environment when it is imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_offline(code: str, tmp_path: Path) -> str:
    """The snippet's stdout, stripped; it must exit 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "ONLOOKER_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_CACHE=str(tmp_path / "hf" / "hub"),
        PYTHONPATH=str(ROOT),
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
