"""MiniCPM-o 4.5 built from its real remote code, with random weights, offline.

The published checkpoint cannot be downloaded here, but its code can run: this module writes a model
folder the way the Hub repository is laid out (``config.json`` with ``auto_map`` to the code files, the
``.py`` files, a tokenizer carrying the real 106 added tokens and chat template, the real preprocessor
config) and, for tests, random weights. Text is garbage; shapes, prompts, caches and call paths are the
model's own. Three kinds: ``vision`` (vision tower only), ``audio`` (+ Whisper audio encoder) and
``omni`` (+ the TTS). Sizes are a parameter: :data:`TINY` for CPU tests, :data:`FULL` (the published
checkpoint's) for the GPU bench, which builds the weights on the GPU instead of writing them.

Which copy of the code runs, in this order: ``ONLOOKER_MINICPM_CODE`` (a folder), a real snapshot's
files in the local Hugging Face cache (``models--openbmb--MiniCPM-o-4_5``; fetch only the code with
``huggingface-cli download openbmb/MiniCPM-o-4_5 --include "*.py" "*.json"``), then the copy in
``../shared/minicpm-o-4_5-code/``, then the same files carried in ``tests/fixtures/minicpm-o-4_5-code.tar.xz``
(so a fresh clone, which has no ``../shared``, still runs the real code; an archive, so the linters and
the duplicate finder do not read another project's code as ours).
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken

from pipeline.backends.remote_code import quiet_transformers, settings_aware_import_check
from tests.helpers.tiny_models import train_tokenizer

ROOT = Path(__file__).resolve().parents[2]
SHARED_CODE = ROOT.parent / "shared" / "minicpm-o-4_5-code"
CARRIED_CODE = ROOT / "tests" / "fixtures" / "minicpm-o-4_5-code.tar.xz"
REPO = "openbmb/MiniCPM-o-4_5"
CODE_FILES = (
    "configuration_minicpmo.py",
    "modeling_minicpmo.py",
    "modeling_navit_siglip.py",
    "processing_minicpmo.py",
    "tokenization_minicpmo_fast.py",
    "utils.py",
)
CONFIG_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "generation_config.json",
)
KINDS = {"vision": (False, False), "audio": (True, False), "omni": (True, True)}  # kind → (init_audio, init_tts)
TRAINED_VOCAB = 512  # byte-level BPE on the test corpus; the real added tokens follow it


@dataclass(frozen=True)
class CodeCopy:
    """Where the model code came from, said in the test output."""

    folder: Path
    origin: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.folder}"


def find_code() -> CodeCopy:
    """The MiniCPM-o 4.5 code to run: ``ONLOOKER_MINICPM_CODE``, a cached Hub snapshot, or the shared copy."""
    if env := os.environ.get("ONLOOKER_MINICPM_CODE"):
        folder = Path(env).expanduser()
        if not all((folder / name).is_file() for name in CODE_FILES):
            raise FileNotFoundError(f"ONLOOKER_MINICPM_CODE={env} does not hold {', '.join(CODE_FILES)}")
        return CodeCopy(folder, "ONLOOKER_MINICPM_CODE")
    for snapshot in _cached_snapshots():
        if all((snapshot / name).is_file() for name in (*CODE_FILES, *CONFIG_FILES)):
            return CodeCopy(snapshot, f"Hugging Face cache, revision {snapshot.name[:12]}")
    if all((SHARED_CODE / name).is_file() for name in (*CODE_FILES, *CONFIG_FILES)):
        return CodeCopy(SHARED_CODE, "shared copy (OpenBMB/MiniCPM-o-Demo 28b60cf)")
    if CARRIED_CODE.is_file():
        return CodeCopy(_unpacked(CARRIED_CODE), "copy carried in tests/fixtures (OpenBMB/MiniCPM-o-Demo 28b60cf)")
    raise FileNotFoundError(
        "no MiniCPM-o 4.5 code found: set ONLOOKER_MINICPM_CODE, or run "
        f'`huggingface-cli download {REPO} --include "*.py" "*.json"`'
    )


@functools.cache
def _unpacked(archive: Path) -> Path:
    """The archive's files in a folder of their own, once per process (removed at exit)."""
    folder = Path(tempfile.mkdtemp(prefix="onlooker-minicpm-code-"))
    atexit.register(shutil.rmtree, folder, True)
    with tarfile.open(archive) as files:
        files.extractall(folder, filter="data")
    return folder


def _cached_snapshots() -> list[Path]:
    """Snapshots of the model in the local Hugging Face cache, newest first."""
    from huggingface_hub.constants import HF_HUB_CACHE

    root = Path(HF_HUB_CACHE) / f"models--{REPO.replace('/', '--')}" / "snapshots"
    return sorted(root.glob("*"), key=lambda p: p.stat().st_mtime, reverse=True) if root.is_dir() else []


@dataclass(frozen=True)
class Size:
    """The architecture's sizes; every field maps onto one config key of the published ``config.json``."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    head_dim: int
    vocab_size: int | None  # None: the tokenizer's size
    vision: dict[str, Any] = field(default_factory=dict)
    audio: dict[str, Any] = field(default_factory=dict)
    tts: dict[str, Any] = field(default_factory=dict)
    query_num: int = 64  # image tokens after the resampler; the preprocessor's image_feature_size


# Found to work on CPU (SOURCE.md): the resampler uses hidden_size // 128 heads, so 128 is the floor.
TINY = Size(
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=256,
    head_dim=32,
    vocab_size=None,
    vision={
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": 14,
        "image_size": 98,
        "model_type": "siglip",
    },
    audio={
        "d_model": 64,
        "encoder_layers": 2,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 256,
        "decoder_layers": 1,
        "decoder_attention_heads": 2,
        "decoder_ffn_dim": 256,
        "num_mel_bins": 80,
        "max_source_positions": 1500,
    },
    tts={
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "num_hidden_layers": 2,
        "num_text_tokens": 1000,
        "num_audio_tokens": 32,  # random logits pick its last (EOS) about once in 32 steps: short speech
        "audio_bos_token_id": 900,
        "text_eos_token_id": 901,
    },
    query_num=64,
)


def build_model_folder(path: str | Path, kind: str = "omni", size: Size = TINY, code: CodeCopy | None = None) -> Path:
    """Write everything but the weights: code, config, tokenizer, processor config."""
    if kind not in KINDS:
        raise KeyError(f"unknown kind '{kind}'; allowed: {', '.join(KINDS)}")
    code = code or find_code()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name in CODE_FILES:
        shutil.copyfile(code.folder / name, path / name)
    shutil.copyfile(code.folder / "preprocessor_config.json", path / "preprocessor_config.json")
    ids = _write_tokenizer(path, code.folder)
    init_audio, init_tts = KINDS[kind]
    config = _config(size, ids, init_audio, init_tts)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    generation = json.loads((code.folder / "generation_config.json").read_text())
    generation.update(bos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"])
    generation["eos_token_id"] = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    (path / "generation_config.json").write_text(json.dumps(generation, indent=2))
    if init_tts:
        _write_reference_voice(path / "assets" / "HT_ref_audio.wav")
    (path / "onlooker-build.json").write_text(json.dumps({"kind": kind, "code": str(code), "size": asdict(size)}))
    return path


def build_tiny_model(path: str | Path, kind: str = "omni", code: CodeCopy | None = None, seed: int = 1234) -> Path:
    """A tiny folder with random float32 weights, loadable by ``AutoModel.from_pretrained`` (a few seconds)."""
    from transformers import AutoConfig, AutoModel

    path = build_model_folder(path, kind, TINY, code)
    with settings_aware_import_check(), quiet_transformers():
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=True)
        torch.manual_seed(seed)
        model = AutoModel.from_config(config, trust_remote_code=True, torch_dtype=torch.float32)
    model.save_pretrained(str(path), safe_serialization=True)
    for name in CODE_FILES:  # save_pretrained copies the code from the module cache; keep the originals
        shutil.copyfile((code or find_code()).folder / name, path / name)
    return path


def decode_plain_tokens(model: Any, folder: Path) -> None:
    """For timing: random weights may pick any id (a full-size vocabulary is far larger than the test
    tokenizer's) and a stop token would end a reply early, so zero the output rows from the first added
    token on: every reply decodes plain tokens up to its cap, a fixed length. The matmul keeps its size."""
    first_added = min(json.loads((folder / "added_tokens.json").read_text()).values())
    with torch.no_grad():
        model.llm.lm_head.weight[first_added:] = 0


def _write_reference_voice(path: Path) -> None:
    """The default voice clip the published repository ships (there a person speaking; here 1 s of tone)."""
    import numpy as np
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(16_000) / 16_000
    soundfile.write(str(path), (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 16_000, subtype="PCM_16")


def _write_tokenizer(path: Path, code_folder: Path) -> dict[str, int]:
    """A small BPE trained here plus the real added tokens (in their real order) and chat template."""
    real = json.loads((code_folder / "tokenizer_config.json").read_text())
    added = [real["added_tokens_decoder"][k] for k in sorted(real["added_tokens_decoder"], key=int)]
    tokenizer = train_tokenizer([], vocab_size=TRAINED_VOCAB)
    backend = tokenizer.backend_tokenizer
    trained = backend.get_vocab_size()
    backend.add_tokens(
        [
            AddedToken(
                t["content"],
                single_word=t["single_word"],
                lstrip=t["lstrip"],
                rstrip=t["rstrip"],
                normalized=t["normalized"],
                special=t["special"],
            )
            for t in added
        ]
    )
    backend.save(str(path / "tokenizer.json"))
    ids = {t["content"]: trained + i for i, t in enumerate(added)}
    config = dict(real)
    config["added_tokens_decoder"] = {str(ids[t["content"]]): t for t in added}
    config["bad_token_ids"] = [i for i in real.get("bad_token_ids", []) if i < trained]
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    shutil.copyfile(code_folder / "special_tokens_map.json", path / "special_tokens_map.json")
    (path / "added_tokens.json").write_text(json.dumps({t: i for t, i in ids.items()}, indent=2, ensure_ascii=False))
    return ids


def _config(size: Size, ids: dict[str, int], init_audio: bool, init_tts: bool) -> dict[str, Any]:
    vocab = size.vocab_size or (max(ids.values()) + 1)
    return {
        "architectures": ["MiniCPMO"],
        "auto_map": {
            "AutoConfig": "configuration_minicpmo.MiniCPMOConfig",
            "AutoModel": "modeling_minicpmo.MiniCPMO",
            "AutoModelForCausalLM": "modeling_minicpmo.MiniCPMO",
        },
        "model_type": "minicpmo",
        "hidden_size": size.hidden_size,
        "num_hidden_layers": size.num_hidden_layers,
        "num_attention_heads": size.num_attention_heads,
        "num_key_value_heads": size.num_key_value_heads,
        "intermediate_size": size.intermediate_size,
        "head_dim": size.head_dim,
        "vocab_size": vocab,
        "max_position_embeddings": 40960,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "query_num": size.query_num,
        "image_size": 448,
        "patch_size": size.vision.get("patch_size", 14),
        "slice_config": {"max_slice_nums": 1, "patch_size": 14, "scale_resolution": 448},
        "vision_config": size.vision,
        "audio_config": size.audio,
        "tts_config": {**size.tts, "llm_dim": size.hidden_size},
        "init_vision": True,
        "init_audio": init_audio,
        "init_tts": init_tts,
        "audio_pool_step": 5,
        "audio_chunk_length": 1.0,
        "drop_vision_last_layer": False,
        "batch_vision_input": True,
        "use_image_id": True,
        "vision_batch_size": 16,
        "torch_dtype": "float32",
        "use_cache": True,
    }
