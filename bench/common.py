"""Shared bench helpers: make the repo importable, summarise samples, print and save results."""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:  # the repository: ``pipeline`` and ``tests.helpers``
    sys.path.insert(0, str(ROOT))


def summary(values: list[float]) -> dict[str, float]:
    """Median, p90, min, max and count of a list of samples (empty-safe)."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median": round(statistics.median(ordered), 3),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 3),
        "min": round(ordered[0], 3),
        "max": round(ordered[-1], 3),
    }


def report(name: str, results: dict, goals: dict[str, str]) -> Path:
    """Print the figures as a table and write them, with machine facts, to bench/results/NAME.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "bench": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "goals": goals,
        "results": results,
    }
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(payload, indent=2))
    print(f"\n{name}")
    for key, value in results.items():
        print(f"  {key:<34} {json.dumps(value)}")
    for key, goal in goals.items():
        print(f"  goal {key:<29} {goal}")
    print(f"  written to {out.relative_to(ROOT)}")
    return out
