#!/usr/bin/env bash
# Builds (once) and installs the real engine the OpenAI-compatible backend's tests run against:
# llama-cpp-python's server, compiled CPU-only from its sdist into a cached wheel, plus the server extras.
# It also keeps the Python half of the vendored llama.cpp (convert_hf_to_gguf.py, conversion/, gguf-py/)
# next to the wheel, which tests/helpers/gguf_models.py uses to turn the tiny Qwen2-VL into model.gguf + mmproj.gguf.
#
#   scripts/build_llama_server.sh            # build if needed, install, print the vendored llama.cpp path
#   ONLOOKER_WHEEL_CACHE=/some/dir scripts/build_llama_server.sh
#
# The compile took 369 s on the 2-core dev machine (GGML_NATIVE=OFF, no BLAS, no CUDA); re-runs with the wheel
# in the cache only reinstall (seconds, a no-op when already installed). Keep LLAMA_CPP_PYTHON_VERSION in step
# with the pin in requirements-dev.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
CACHE=${ONLOOKER_WHEEL_CACHE:-$HOME/.cache/onlooker/wheels}
VENDOR="$CACHE/llama.cpp-$VERSION"
mkdir -p "$CACHE"

pip=("$PYTHON" -m pip --disable-pip-version-check)

find_wheel() {
  compgen -G "$CACHE/llama_cpp_python-$VERSION-*.whl" | head -n 1 || true
}

sdist=""
fetch_sdist() {
  if [[ -z "$sdist" ]]; then
    sdist=$(compgen -G "$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz" | head -n 1 || true)
    if [[ -z "$sdist" ]]; then
      echo "build_llama_server: downloading the llama-cpp-python $VERSION sdist" >&2
      "${pip[@]}" download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$CACHE/sdist"
      sdist="$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz"
    fi
  fi
}

wheel=$(find_wheel)
if [[ -z "$wheel" ]]; then
  # pip's isolated build brings scikit-build-core, CMake and Ninja from PyPI; only the C/C++ compiler must be here.
  if ! command -v g++ >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    echo "build_llama_server: installing the Debian package g++" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends g++ >/dev/null
  fi
  fetch_sdist
  echo "build_llama_server: compiling llama-cpp-python $VERSION (CPU only, ~6 min on 2 cores)" >&2
  start=$SECONDS
  # CPU only, no -march=native (the cache may travel to another CPU; ggml still enables AVX2/FMA/F16C, so an
  # AVX2 CPU is needed), no BLAS, no curl/openssl,
  # no CUDA even on a machine that has it (the tests run the tiny model on CPU).
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF}" \
    CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    "${pip[@]}" wheel -q --no-deps "$sdist" -w "$CACHE"
  wheel=$(find_wheel)
  [[ -n "$wheel" ]] || { echo "build_llama_server: no wheel in $CACHE after the build" >&2; exit 1; }
  echo "build_llama_server: built $(basename "$wheel") in $((SECONDS - start)) s" >&2
fi

if [[ ! -f "$VENDOR/convert_hf_to_gguf.py" ]]; then
  fetch_sdist
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  top="llama_cpp_python-$VERSION/vendor/llama.cpp"
  tar -xzf "$sdist" -C "$tmp" "$top/convert_hf_to_gguf.py" "$top/conversion" "$top/gguf-py" "$top/LICENSE"
  rm -rf "$VENDOR"
  mv "$tmp/$top" "$VENDOR"
fi

# The wheel plus the [server] extras' dependencies; skipped when exactly this wheel's version and the server's
# modules are already importable. The converter itself needs numpy, torch, transformers, safetensors (the
# project's own requirements) and, for gguf-py, PyYAML and tqdm; sentencepiece is not needed (BPE tokenizer).
installed=$("$PYTHON" - "$VERSION" <<'PY' 2>/dev/null || true
import importlib.metadata as md, importlib.util as iu, sys
mods = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings", "yaml", "tqdm")
ok = md.version("llama_cpp_python") == sys.argv[1] and all(iu.find_spec(m) for m in mods)
print("yes" if ok else "no")
PY
)
if [[ "$installed" != "yes" ]]; then
  "${pip[@]}" install -q --force-reinstall --no-deps "$wheel"
  "${pip[@]}" install -q "$wheel" "uvicorn>=0.22.0" "fastapi>=0.100.0" "pydantic-settings>=2.0.1" \
    "sse-starlette>=1.6.1" "starlette-context>=0.3.6,<0.4" "PyYAML>=5.1" "diskcache>=5.6.1" "tqdm>=4.27"
fi
echo "$VENDOR"
