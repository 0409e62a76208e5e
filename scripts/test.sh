#!/usr/bin/env bash
# The whole test suite: installs what is missing (test tools included), then runs lint and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
bash scripts/setup.sh --dev
"$PYTHON" -m ruff check .
"$PYTHON" -m pytest -q "$@"
