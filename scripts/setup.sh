#!/usr/bin/env bash
# Installs what Onlooker needs on a fresh machine: Debian packages (when apt-get is there) and the
# Python requirements into the active Python. `--dev` adds the test tools and Chromium (for the
# browser tests). Safe to re-run: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

debs=(ffmpeg espeak-ng)
# The browser tests drive the system Chromium (Playwright never downloads its own); the live-stream
# tests serve real streams: an RTSP camera (GStreamer's RTSP server, x264) and VLC. The MQTT tests run a real
# broker (Mosquitto, with mosquitto_passwd).
((dev)) && debs+=(chromium vlc-bin vlc-plugin-base python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly mosquitto)
missing=()
for pkg in "${debs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: please install ${missing[*]} with your system's package manager" >&2
  fi
fi

req=requirements.txt
((dev)) && req=requirements-dev.txt
# The engine the OpenAI-compatible backend's tests run against: llama-cpp-python[server], compiled once into a
# cached wheel (~6 min on 2 cores the first time) and installed before requirements-dev.txt, whose pin it meets.
if ((dev)); then
  llama_cpp_src=$(PYTHON="$PYTHON" bash scripts/build_llama_server.sh)  # a failed build stops the setup
  echo "setup: llama-cpp-python server ready; GGUF converter in $llama_cpp_src"
fi
# Quiet no-op when everything is already there; torch==2.13.0 takes the wheel pip finds first
# (a CUDA build on a GPU machine from PyPI, the CPU build where only that one is available).
"$PYTHON" -m pip install -q --disable-pip-version-check -r "$req"
echo "setup: ready"
