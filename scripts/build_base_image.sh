#!/usr/bin/env bash
# Builds a Debian 12 (bookworm) base image for the Dockerfile from Debian packages alone, for machines that
# reach Debian's mirror but no container registry (this project's CI): `docker build --build-arg
# BASE_IMAGE=localhost/onlooker-base:bookworm .` then needs no image from a registry. The image holds
# Python 3.11 (with venv), FFmpeg, espeak-ng and CA certificates, so the Dockerfile's apt step has nothing
# left to install.
#
#   bash scripts/build_base_image.sh [IMAGE]    # default localhost/onlooker-base:bookworm
#
# The root filesystem is made once with mmdebstrap (apt-get install mmdebstrap; run as root, ~2 min) and
# cached as a tarball in ~/.cache/onlooker/container/ (ONLOOKER_CACHE), keyed by the suite and the package
# list; later runs only import it (seconds), and do nothing when the image is already there.
# ONLOOKER_REBUILD_BASE=1 makes the tarball again (to take Debian's security updates).
# CONTAINER_ENGINE=podman|docker picks the engine (default: podman when installed, else docker).
set -euo pipefail

image=${1:-localhost/onlooker-base:bookworm}
suite=bookworm
packages=(python3 python3-venv ca-certificates ffmpeg espeak-ng)
cache=${ONLOOKER_CACHE:-$HOME/.cache/onlooker}/container
engine=${CONTAINER_ENGINE:-$(command -v podman >/dev/null 2>&1 && echo podman || echo docker)}

if [[ "${ONLOOKER_REBUILD_BASE:-0}" != 1 ]] && "$engine" image inspect "$image" >/dev/null 2>&1; then
  echo "base image: $image is there already (ONLOOKER_REBUILD_BASE=1 to make it again)" >&2
  exit 0
fi

key=$(printf '%s\n' "$suite" "${packages[@]}" v1 | sha256sum | cut -c1-12)
tarball=$cache/debian-$suite-$key.tar
mkdir -p "$cache"
if [[ ! -s "$tarball" || "${ONLOOKER_REBUILD_BASE:-0}" == 1 ]]; then
  command -v mmdebstrap >/dev/null 2>&1 || {
    echo "base image: mmdebstrap is missing: apt-get install mmdebstrap" >&2
    exit 1
  }
  echo "base image: making the $suite root filesystem with mmdebstrap (${packages[*]})…" >&2
  start=$SECONDS
  # Debian's own mirror (deb.debian.org), with bookworm-updates and -security added by mmdebstrap; no
  # recommended packages, no documentation, no apt lists left behind.
  mmdebstrap --variant=apt --include="$(
    IFS=,
    echo "${packages[*]}"
  )" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='chroot "$1" apt-get clean' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/*' \
    "$suite" "$cache/partial.tar"
  mv "$cache/partial.tar" "$tarball"
  echo "base image: root filesystem made in $((SECONDS - start)) s ($(du -h "$tarball" | cut -f1)): $tarball" >&2
fi

"$engine" import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  "$tarball" "$image" >/dev/null
echo "base image: $image imported from $tarball" >&2
