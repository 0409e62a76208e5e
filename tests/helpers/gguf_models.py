"""The tiny random Qwen2-VL of ``tiny_models`` as GGUF files for a real llama.cpp engine.

``build_gguf_qwen2vl(folder)`` writes ``model.gguf`` (the Qwen2 text model, arch ``qwen2vl``, f32) and
``mmproj.gguf`` (the vision tower + merger, projector ``qwen2vl_merger``) with the converter shipped in
llama.cpp's sources: ``convert_hf_to_gguf.py`` with its ``conversion/`` package and ``gguf-py`` from the
llama-cpp-python sdist, kept by ``scripts/build_llama_server.sh`` in the wheel cache
(``${ONLOOKER_WHEEL_CACHE:-~/.cache/onlooker/wheels}/llama.cpp-<version>``). ``tiny_gguf_qwen2vl()`` is the
cached form for a session-scoped fixture: once per process, and on disk across runs under
``${ONLOOKER_GGUF_CACHE:-~/.cache/onlooker/gguf}``, keyed by a hash of the builder sources and the converter.

What it took (llama-cpp-python 0.3.36, its vendored llama.cpp, transformers 4.51.3), all shims applied by
monkeypatching in the converter's own process (``_CONVERT_RUNNER``), never by editing the vendored files:

- Pre-tokenizer: the converter hashes the tokenizer's encoding of a test string and refuses unknown hashes
  (``NotImplementedError: BPE pre-tokenizer was not recognized``); there is no config key to override it.
  The tiny tokenizer uses Qwen2's split regex, so ``get_vocab_base_pre`` is patched to answer ``"qwen2"``.
- Vocabulary: ``Qwen2VLModel.set_vocab`` tries SentencePiece first and fails with ``ModuleNotFoundError``
  when ``sentencepiece`` is not installed (it only falls back on ``FileNotFoundError``); patched to go
  straight to ``_set_vocab_gpt2`` (byte-level BPE, ``tokenizer.ggml.model = gpt2``).
- Vision depth 1: the mmproj tensor map is built for ``depth`` blocks, and the merger's
  ``visual.merger.mlp.2.*`` is mapped through the block index, so with ``depth < 3`` the converter fails
  with ``Can not map tensor 'visual.merger.mlp.2.bias'``; the map is built for ``max(depth, 8)`` blocks
  (``clip.vision.block_count`` in the file stays 1).
- transformers 4.51 saves ``rope_scaling.type = "default"`` (not ``mrope``): the converter warns
  ``Unknown RoPE type: default`` but still writes ``qwen2vl.rope.dimension_sections = [2, 3, 3, 0]``.
- Output restricted to printable ASCII (``restrict_output_to_ascii``, on the HF weights before converting):
  llama-cpp-python 0.3.36 holds back a token whose text ends in a UTF-8 lead byte and skips its ``max_tokens``
  check while doing so; a random byte-level model that keeps emitting such bytes ran past ``max_tokens`` (1503
  tokens for 1500, 103 for 100), and a 1500-token request once kept a server at 100 % CPU for over 10 minutes
  (not seen since). The ``lm_head`` rows of the
  159 tokens with a byte outside printable ASCII are zeroed and the others scaled by 30, so those tokens never
  win. Side effect: the special tokens' rows are not scaled either, so the model never emits ``<|im_end|>``:
  every completion runs to ``max_tokens`` (``finish_reason: "length"``), deterministic at temperature 0.
- The rest of the tiny model is accepted as is: vision embed 32 with 2 heads (head size 16), patch 14,
  ``spatial_merge_size`` 2, ``temporal_patch_size`` 2 (the Conv3D is split into two Conv2Ds), text hidden 64.
  ``clip.vision.image_size`` defaults to 560. The chat template is carried into ``tokenizer.chat_template``.

Timings on the 2-core dev machine: importing this module (torch, transformers) ~4 s; a cold
``tiny_gguf_qwen2vl()`` ~3 s on an idle machine (HF model build, then the two conversions side by side, ~2 s
each, mostly imports), 10-20 s while a compile or another test run is busy; a warm one only checks the files.
Files: model.gguf 0.7 MB (f32), mmproj.gguf 0.3 MB, 2.1 MB per cache entry with the HF source folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.helpers.tiny_models import build_tiny_qwen2vl

LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # keep in step with scripts/build_llama_server.sh and requirements-dev.txt

# Runs the vendored convert_hf_to_gguf.py in-process after patching what a tiny random model trips over
# (see the module docstring). argv: VENDOR_DIR then the converter's own arguments.
_CONVERT_RUNNER = """\
import runpy, sys
from pathlib import Path

vendor = Path(sys.argv.pop(1))
sys.path[:0] = [str(vendor), str(vendor / "gguf-py")]
import gguf
import conversion.base as base
from conversion.qwenvl import Qwen2VLModel

base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
Qwen2VLModel.set_vocab = lambda self: self._set_vocab_gpt2()
_mmproj_init = base.MmprojModel.__init__

def _init(self, *args, **kwargs):
    _mmproj_init(self, *args, **kwargs)
    self.tensor_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, max(self.block_count, 8))

base.MmprojModel.__init__ = _init
sys.argv[0] = str(vendor / "convert_hf_to_gguf.py")
runpy.run_path(sys.argv[0], run_name="__main__")
"""

CONVERT_TIMEOUT_S = 300
# lm_head rows of tokens the GGUF model may emit are scaled by this (logits ~N(0, 5) instead of ~N(0, 0.16)).
LOGIT_SCALE = 30.0


def _token_bytes(token: str) -> bytes:
    """The bytes of a byte-level BPE token string (GPT-2's byte-to-unicode mapping, inverted)."""
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    decoder = {char: byte for byte, char in bytes_to_unicode().items()}
    return bytes(decoder[c] for c in token if c in decoder)


def restrict_output_to_ascii(model_dir: Path) -> int:
    """Make the random model in ``model_dir`` emit only printable-ASCII text tokens (or special tokens).

    llama-cpp-python 0.3.36 holds back a token whose text ends in a UTF-8 lead byte (its ``multibyte_fix``)
    and ``continue``s *before* the ``max_tokens`` check, so a random byte-level model that keeps emitting
    such bytes ignores ``max_tokens`` and spins at 100 % CPU until the context fills (minutes; SIGTERM does not
    stop it either, uvicorn waits for the request). Zeroing the ``lm_head`` rows of every token with a byte
    outside printable ASCII (tab and newline allowed) pins their logits at 0, and scaling the other rows by
    ``LOGIT_SCALE`` puts hundreds of allowed tokens far above 0 on every step, so neither greedy nor sampled
    decoding picks them. Returns how many tokens were silenced.
    """
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    allowed = set(range(0x20, 0x7F)) | {0x09, 0x0A}
    weights_path = model_dir / "model.safetensors"
    weights = load_file(weights_path)
    head = weights["lm_head.weight"]
    silenced = 0
    for token, index in tokenizer.get_vocab().items():
        if index in special or index >= head.shape[0]:
            continue
        if set(_token_bytes(token)) <= allowed:
            head[index] *= LOGIT_SCALE
        else:
            head[index] = 0.0
            silenced += 1
    save_file(weights, weights_path, metadata={"format": "pt"})
    return silenced


def wheel_cache_dir() -> Path:
    """Where ``scripts/build_llama_server.sh`` keeps the wheel and the vendored llama.cpp sources."""
    return Path(os.environ.get("ONLOOKER_WHEEL_CACHE") or Path.home() / ".cache" / "onlooker" / "wheels")


def _vendor_candidate() -> Path:
    override = os.environ.get("ONLOOKER_LLAMA_CPP_DIR")
    return Path(override) if override else wheel_cache_dir() / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}"


def vendored_llama_cpp() -> Path | None:
    """The vendored llama.cpp folder holding ``convert_hf_to_gguf.py``, or None when it was never unpacked.

    ``ONLOOKER_LLAMA_CPP_DIR`` overrides the cache (any llama.cpp checkout with ``conversion/`` works).
    """
    path = _vendor_candidate()
    if (path / "convert_hf_to_gguf.py").is_file() and (path / "gguf-py" / "gguf").is_dir():
        return path
    return None


def missing_converter_reason() -> str | None:
    """Why the GGUF conversion cannot run here, or None when it can."""
    if vendored_llama_cpp() is None:
        return (
            f"llama.cpp's convert_hf_to_gguf.py (with gguf-py) not found in {_vendor_candidate()}"
            " (run scripts/build_llama_server.sh, or scripts/setup.sh --dev)"
        )
    return None


def convert_hf_to_gguf(
    model_dir: Path, outfile: Path, *, mmproj: bool = False, outtype: str = "f32", vendor: Path | None = None
) -> Path:
    """Run the vendored converter (with the shims) on ``model_dir``, writing ``outfile``; returns ``outfile``.

    ``mmproj=True`` writes the vision projector instead of the text model. Raises ``RuntimeError`` with the
    tail of the converter's log when it fails.
    """
    vendor = vendor or vendored_llama_cpp()
    if vendor is None:
        raise FileNotFoundError(missing_converter_reason())
    args = [sys.executable, "-c", _CONVERT_RUNNER, str(vendor), str(model_dir)]
    args += ["--outfile", str(outfile), "--outtype", outtype]
    if mmproj:
        args.append("--mmproj")
    # NO_LOCAL_GGUF: the runner already put the vendored gguf-py first on sys.path.
    result = subprocess.run(
        args,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=CONVERT_TIMEOUT_S,
        env={**os.environ, "NO_LOCAL_GGUF": "1"},
        check=False,
    )
    if result.returncode != 0 or not outfile.is_file():
        output = (result.stdout + result.stderr)[-4000:]
        raise RuntimeError(f"convert_hf_to_gguf failed (exit {result.returncode}) for {outfile.name}:\n{output}")
    return outfile


def build_gguf_qwen2vl(folder: Path) -> tuple[Path, Path]:
    """Write the tiny Qwen2-VL as ``folder/model.gguf`` and ``folder/mmproj.gguf``; returns (model, mmproj).

    Reuses both files when they are already there (a finished build is marked by ``folder/.complete``).
    The Hugging Face directory is built in ``folder/hf`` and kept (the GGUFs' source); its ``lm_head`` is
    changed by ``restrict_output_to_ascii`` first, so it differs from ``tiny_models.tiny_model_dir("qwen2vl")``.
    """
    folder = Path(folder)
    model, mmproj = folder / "model.gguf", folder / "mmproj.gguf"
    done = folder / ".complete"
    if done.is_file() and model.is_file() and mmproj.is_file():
        return model, mmproj
    folder.mkdir(parents=True, exist_ok=True)
    hf = folder / "hf"
    if hf.exists():
        shutil.rmtree(hf)
    build_tiny_qwen2vl(hf)
    restrict_output_to_ascii(hf)
    with ThreadPoolExecutor(2) as pool:  # two converter processes side by side
        jobs = [pool.submit(convert_hf_to_gguf, hf, model), pool.submit(convert_hf_to_gguf, hf, mmproj, mmproj=True)]
        for job in jobs:
            job.result()
    done.write_text("ok\n")
    return model, mmproj


def _source_digest() -> str:
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for source in (here / "tiny_models.py", here / "gguf_models.py"):
        digest.update(source.read_bytes())
    return digest.hexdigest()


# Taken at import, so the disk cache key matches the code this process runs even if the files change later.
_SOURCE_DIGEST = _source_digest()


def _cache_key() -> str:
    digest = hashlib.sha256(_SOURCE_DIGEST.encode())
    vendor = vendored_llama_cpp()
    if vendor is not None:
        digest.update(str(vendor.resolve()).encode())
        digest.update((vendor / "conversion" / "qwenvl.py").read_bytes())
    return digest.hexdigest()[:16]


_cached: tuple[Path, Path] | None = None
_cached_lock = threading.Lock()


def tiny_gguf_qwen2vl() -> tuple[Path, Path]:
    """(model.gguf, mmproj.gguf) of the tiny Qwen2-VL, built at most once per process and kept on disk.

    The disk cache (``ONLOOKER_GGUF_CACHE``, default ``~/.cache/onlooker/gguf``) is keyed by the builder
    sources and the converter, so editing either rebuilds; a build goes to a temporary folder first and is
    renamed into place, so an interrupted build never leaves half-written files behind. Treat as read-only.
    """
    global _cached
    with _cached_lock:
        if _cached is None:
            root = Path(os.environ.get("ONLOOKER_GGUF_CACHE") or Path.home() / ".cache" / "onlooker" / "gguf")
            final = root / f"qwen2vl-{_cache_key()}"
            if not (final / ".complete").is_file():
                root.mkdir(parents=True, exist_ok=True)
                staging = Path(tempfile.mkdtemp(prefix="building-", dir=root))
                try:
                    build_gguf_qwen2vl(staging)
                    if final.exists() and not (final / ".complete").is_file():
                        shutil.rmtree(final)  # a leftover from an older, interrupted layout
                    try:
                        staging.rename(final)
                    except OSError:
                        if not (final / ".complete").is_file():  # not another process finishing first
                            raise
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
            _cached = build_gguf_qwen2vl(final)  # only checks: the files are complete
        return _cached
