"""The container's health check: Onlooker's own health route answers (HTTP 200).

Run by the image's HEALTHCHECK (``python deploy/healthcheck.py``); exits 0 when healthy, 1 otherwise, with the
reason on stdout (``docker inspect`` shows it). Reads the port from ``ONLOOKER_PORT`` like the app does, and
needs nothing but the standard library.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request


def main() -> int:
    port = os.environ.get("ONLOOKER_PORT") or "7860"
    url = f"http://127.0.0.1:{port}/onlooker/health"
    try:
        with urllib.request.urlopen(url, timeout=4) as reply:
            body = reply.read(4096).decode("utf-8", "replace")
    except Exception as exc:  # refused, timed out, an HTTP error status: all "unhealthy", with the reason
        print(f"unhealthy: {url}: {exc}")
        return 1
    try:
        health = json.loads(body)
    except ValueError:
        health = body.strip()  # with a login the route says only "ok"
    if isinstance(health, dict) and "backend" in health:
        print(f"healthy: {health['backend']}; {health.get('sessions', 0)} session(s)")
    else:
        print(f"healthy: {health}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
