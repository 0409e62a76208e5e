"""Finding and placing a local model, for both in-process backends (``transformers`` and ``minicpm``).

A model is a local folder or a Hugging Face hub id found in (or fetched into) the standard cache; it
runs on a device the user names or ``auto`` picks, in the precision that device is built for, with
the fastest attention installed. Every failure is one BackendError line that says what to do.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.errors import BackendError

# What a transformers model needs from its repository (not every file: some hold other formats or demos).
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]


def resolve_device(device: str) -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a usable device, or say why it is not usable."""
    name = device.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BackendError(
                f"--device {device}: CUDA is not available to torch {torch.__version__} "
                "(no GPU, no driver, or a CPU-only torch build); use --device cpu or auto"
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BackendError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return dev
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise BackendError("--device mps: Apple MPS is not available here; use --device cpu or auto")
        return torch.device("mps")
    raise BackendError(f"--device {device}: unknown device; allowed: auto, cpu, cuda, cuda:N, mps")


def pick_dtype(device: torch.device) -> torch.dtype:
    """Half precision where the accelerator is built for it; float32 on CPU, where half is slow or unsupported."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def pick_attention(requested: str) -> str:
    """``--attn`` as given, or for ``auto`` FlashAttention 2 where it is installed and PyTorch's SDPA otherwise."""
    if requested != "auto":
        return requested
    from transformers.utils import is_flash_attn_2_available

    return "flash_attention_2" if is_flash_attn_2_available() else "sdpa"


def _looks_like_path(model: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if model.startswith((".", "~", "/", "\\")) or "\\" in model or Path(model).is_absolute():
        return True
    try:
        validate_repo_id(model)
    except HFValidationError:
        return True
    return False


def _download(model: str, allow_patterns: list[str] | None) -> Path:
    """Fetch (or find in the standard cache) the files needed to load ``model`` from the hub
    (``allow_patterns``; None = the whole repository, for models that bring their own code and assets)."""
    import requests
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(model, allow_patterns=allow_patterns))
    except GatedRepoError:
        raise BackendError(
            f"model '{model}' is gated on the Hugging Face hub: accept its terms at https://huggingface.co/{model} "
            "and log in with `huggingface-cli login`"
        ) from None
    except RepositoryNotFoundError:
        raise BackendError(
            f"model '{model}' is neither a local directory nor a model on the Hugging Face hub "
            "(check the spelling; private models need `huggingface-cli login`)"
        ) from None
    except RevisionNotFoundError as exc:
        raise BackendError(f"model '{model}': {exc}") from None
    except (LocalEntryNotFoundError, requests.exceptions.ConnectionError, requests.exceptions.Timeout):
        raise BackendError(
            f"model '{model}' is not in the local Hugging Face cache and the hub cannot be reached; "
            f"download it on a connected machine with `huggingface-cli download {model}` (or copy it) "
            "and pass its local path with --model"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise BackendError(f"downloading model '{model}' failed: {' '.join(str(exc).split())}") from None


def locate_model(model: str, allow_patterns: list[str] | None = ALLOW_PATTERNS) -> Path:
    """A local model directory for ``model``: the path itself, or a hub snapshot in the standard cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise BackendError(
            f"model path '{model}' is a file; pass the model's directory (the one with config.json) or a hub id"
        )
    if _looks_like_path(model):
        raise BackendError(f"model path '{model}' does not exist")
    return _download(model, allow_patterns)
