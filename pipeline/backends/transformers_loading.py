"""Loading an image-text-to-text model and its processor for the ``transformers`` backend.

Every way a model can be the wrong kind (GGUF files, its own code, a text-only or captioning model,
no processor, no chat template) or fail to load (unknown type, out of memory) is one BackendError
line that says what the model is and what to pick instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.errors import BackendError


def _model_kind(config: Any) -> str:
    """Say what a non image-text-to-text model is, so the user knows why it was refused."""
    from transformers.models.auto import modeling_auto as auto

    kinds = [
        ("MODEL_FOR_VISION_2_SEQ_MAPPING_NAMES", "an image-to-text (captioning) model without chat support"),
        ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "a text-only language model"),
        ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "a text-only sequence-to-sequence model"),
        ("MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES", "a speech-to-text model"),
        ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "an image-classification model"),
        ("MODEL_FOR_MASKED_LM_MAPPING_NAMES", "a masked (fill-in-the-blank) language model"),
    ]
    for mapping, kind in kinds:
        if config.model_type in getattr(auto, mapping, {}):
            return kind
    return "not an image-text-to-text model"


def load_vlm(model_id: str, path: Path, dtype: torch.dtype, device: torch.device) -> tuple[Any, Any]:
    """(processor, model in eval mode on ``device``) from the folder ``path``; errors name ``model_id``."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if not (path / "config.json").is_file():
        hint = " (it holds GGUF files, which this backend cannot load)" if any(path.glob("*.gguf")) else ""
        raise BackendError(f"'{path}' is not a transformers model directory: it has no config.json{hint}")
    try:
        config = AutoConfig.from_pretrained(path)
    except (ValueError, KeyError) as exc:
        import transformers

        message = " ".join(str(exc).split())
        if "trust_remote_code" in message:
            raise BackendError(
                f"model '{model_id}' needs its own Python code (trust_remote_code), which this backend "
                "does not run; pick a model supported by transformers itself"
            ) from None
        raise BackendError(
            f"model '{model_id}' has a model type that transformers {transformers.__version__} does not "
            f"know ({message}); upgrade transformers or pick another model"
        ) from None
    except OSError as exc:
        raise BackendError(f"model '{model_id}': cannot read config.json ({exc})") from None
    if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        archs = ", ".join(getattr(config, "architectures", None) or []) or "unknown architecture"
        raise BackendError(
            f"model '{model_id}' is {_model_kind(config)} (model_type '{config.model_type}', {archs}); "
            "the transformers backend needs an image-text-to-text (vision-language) model, "
            "e.g. Qwen/Qwen2-VL-2B-Instruct"
        )
    try:
        processor = AutoProcessor.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackendError(f"model '{model_id}': cannot load its processor ({exc})") from None
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise BackendError(f"model '{model_id}' has no image processor, so it cannot take frames")
    if not getattr(processor, "chat_template", None):
        raise BackendError(f"model '{model_id}' has no chat template; use an instruction-tuned (chat) model")
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, torch_dtype=dtype, device_map={"": str(device)})
    except torch.cuda.OutOfMemoryError:
        raise BackendError(f"model '{model_id}' does not fit in the memory of {device}; pick a smaller model") from None
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        raise BackendError(f"model '{model_id}': cannot load its weights ({' '.join(str(exc).split())})") from None
    model.eval()
    return processor, model
