# Onlooker in a container: the web app on port 7860 (`python app.py`), or any other command of app.py
# (`docker run … onlooker python app.py --headless --source …`). docs/deploy.md has the set-ups.
#
# Default: an NVIDIA CUDA base and the CUDA build of torch 2.13.0, which is the build PyPI serves for Linux
# x86_64 and brings its own CUDA 13.0 libraries and cuDNN as wheels; the base adds little more than the
# settings the NVIDIA Container Toolkit reads, so its small "base" flavour is enough (NVIDIA driver >= 580).
#
#   docker build -t onlooker .                                                  # GPU (CUDA 13.0)
#   docker build -t onlooker:cpu --build-arg BASE_IMAGE=debian:bookworm-slim \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .        # CPU only, ~4 GB smaller
#
# Any apt-based base whose python3 is 3.11+ works (Debian 12+, Ubuntu 24.04+); scripts/build_base_image.sh makes one
# from Debian packages where no registry can be reached. PIP_EXTRA_ARGS passes a mirror to pip
# (`--index-url https://mirror/simple`, `--find-links /wheels`, `--cert /ca.crt`).
ARG BASE_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Python, FFmpeg and espeak-ng from the base's own packages (apt runs only for what the base lacks).
RUN set -eu; \
    missing=""; \
    for pkg in python3 python3-venv ca-certificates ffmpeg espeak-ng; do \
      dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"; \
    done; \
    if [ -n "$missing" ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends $missing; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -c 'import sys; assert sys.version_info >= (3, 11), "Onlooker needs Python 3.11+, not " + sys.version'; \
    python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv

# The pinned stack, before the source, so that editing the code reuses this layer. torch first: TORCH_SPEC
# (default: requirements.txt's pin) from TORCH_INDEX_URL when given (https://download.pytorch.org/whl/cpu for a
# CPU image; …/cu130 holds the same CUDA build as PyPI); the rest of requirements.txt then leaves it alone.
ARG TORCH_SPEC=""
ARG TORCH_INDEX_URL=""
ARG PIP_EXTRA_ARGS=""
WORKDIR /app
COPY requirements.txt ./
RUN set -eu; \
    torch=${TORCH_SPEC:-$(grep -E '^torch==' requirements.txt)}; \
    pip install $PIP_EXTRA_ARGS ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$torch"; \
    grep -vE '^torch([=<>!~ ;[]|$)' requirements.txt > /tmp/requirements-without-torch.txt; \
    pip install $PIP_EXTRA_ARGS -r /tmp/requirements-without-torch.txt; \
    rm /tmp/requirements-without-torch.txt; \
    python -c 'import torch, gradio, transformers, av, cv2; print("torch", torch.__version__, torch.version.cuda)'

# A user of its own; the model cache and the recordings are volumes it owns (a named volume starts with
# this ownership; a host folder mounted there must be writable by APP_UID: build with APP_UID=$(id -u) to
# match yours; a user the base already has with that uid, like Ubuntu's "ubuntu", makes way).
ARG APP_UID=10001
RUN set -eu; \
    taken=$(getent passwd "$APP_UID" | cut -d: -f1); \
    if [ -n "$taken" ]; then userdel --remove "$taken" 2>/dev/null || userdel "$taken"; fi; \
    if getent group "$APP_UID" >/dev/null; then groupdel "$(getent group "$APP_UID" | cut -d: -f1)"; fi; \
    useradd --uid "$APP_UID" --user-group --create-home --home-dir /home/onlooker --shell /usr/sbin/nologin onlooker; \
    mkdir -p /data/huggingface /data/recordings; \
    chown -R onlooker:onlooker /data
ENV HF_HOME=/data/huggingface \
    ONLOOKER_RECORD_DIR=/data/recordings \
    ONLOOKER_HOST=0.0.0.0 \
    ONLOOKER_PORT=7860 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_ANALYTICS_ENABLED=False
VOLUME ["/data/huggingface", "/data/recordings"]

COPY . .
USER onlooker
EXPOSE 7860
# Loading a model (and downloading it the first time) may take minutes: the check counts only after 10.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10m --retries=3 CMD ["python", "deploy/healthcheck.py"]
# Ctrl-C is how the app stops cleanly (sessions closed, recordings finished): `docker stop` sends it.
STOPSIGNAL SIGINT
CMD ["python", "app.py"]
