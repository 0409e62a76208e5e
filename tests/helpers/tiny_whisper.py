"""A tiny, randomly initialised Whisper converted for faster-whisper (CTranslate2), built offline for tests.

The hub is unreachable in tests, so the model is built from scratch: a byte-level BPE tokenizer trained on
the shared tiny corpus, Whisper's special tokens appended after the text tokens in Whisper's order (the
decoders rely on it: text ids are below ``<|endoftext|>``, timestamps start right after
``<|notimestamps|>``), a 2-layer ``WhisperForConditionalGeneration`` with 80 mel bins, then the real
``ctranslate2`` converter. The vocabulary is below 51865 entries, so CTranslate2 treats it as an
English-only model (like ``tiny.en``). Weights are random: output text is garbage, plumbing is real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

from tests.helpers.tiny_models import SEED, train_tokenizer

# Whisper's special tokens in the order of the real English-only vocabulary (one language only).
WHISPER_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]
TIMESTAMP_TOKENS = 1501  # <|0.00|> … <|30.00|>, 0.02 s apart; the converter appends them to the vocabulary
N_MELS = 80


def _converter(model_dir: Path, copy_files: list[str]) -> Any:
    """ctranslate2's TransformersConverter, made to pass ``torch_dtype`` (transformers 4.51 rejects ``dtype``)."""
    from ctranslate2.converters import TransformersConverter

    class Converter(TransformersConverter):
        def load_model(self, model_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
            kwargs["torch_dtype"] = kwargs.pop("dtype", None) or torch.float32
            return model_class.from_pretrained(model_name_or_path, **kwargs)

    return Converter(str(model_dir), copy_files=copy_files)


def build_tiny_whisper_hf(path: str | Path) -> Path:
    """Write the tiny Whisper as a transformers model directory (config, weights, tokenizer, preprocessor)."""
    path = Path(path)
    tokenizer = train_tokenizer([], vocab_size=600)
    tokenizer.add_special_tokens({"additional_special_tokens": WHISPER_SPECIAL_TOKENS})
    tokenizer.unk_token = tokenizer.bos_token = tokenizer.eos_token = tokenizer.pad_token = "<|endoftext|>"
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in WHISPER_SPECIAL_TOKENS}
    assert ids["<|endoftext|>"] == len(tokenizer) - len(WHISPER_SPECIAL_TOKENS), "specials must follow the text"
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=len(tokenizer) + TIMESTAMP_TOKENS,
        num_mel_bins=N_MELS,
        d_model=64,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_layers=2,
        decoder_attention_heads=4,
        decoder_ffn_dim=128,
        max_source_positions=1500,  # 30 s of 10 ms frames after the stride-2 convolution: fixed by the features
        max_target_positions=448,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=None,  # set on the generation config below
        begin_suppress_tokens=None,
        torch_dtype="float32",
    )
    torch.manual_seed(SEED)
    model = WhisperForConditionalGeneration(config).eval()
    # The output projection is tied to the token embeddings: zero rows give special and timestamp tokens
    # logit 0 while the best of ~600 random text logits is positive, so greedy decoding always emits text
    # (deterministic garbage) instead of ending at once or looping on a timestamp token.
    with torch.no_grad():
        model.get_output_embeddings().weight[eot:] = 0.0
    gen = model.generation_config
    gen.decoder_start_token_id = sot
    gen.eos_token_id = gen.pad_token_id = gen.bos_token_id = eot
    gen.suppress_tokens = []
    gen.begin_suppress_tokens = [tokenizer.convert_tokens_to_ids("Ġ"), eot]
    gen.no_timestamps_token_id = ids["<|notimestamps|>"]
    gen.is_multilingual = False
    gen.lang_to_id = {"<|en|>": ids["<|en|>"]}
    gen.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    WhisperFeatureExtractor(feature_size=N_MELS, sampling_rate=16000, hop_length=160, chunk_length=30).save_pretrained(
        path
    )
    return path


def build_tiny_whisper(path: str | Path) -> Path:
    """Write the tiny Whisper converted to CTranslate2 (int8) at ``path``: a folder ``WhisperModel`` loads."""
    path = Path(path)
    hf_dir = build_tiny_whisper_hf(path.with_name(path.name + "-hf"))
    converter = _converter(hf_dir, copy_files=["tokenizer.json", "preprocessor_config.json"])
    converter.convert(str(path), quantization="int8", force=True)
    # faster-whisper reads the special tokens' ids from tokenizer.json; check the layout it relies on.
    vocabulary = json.loads((path / "vocabulary.json").read_text())
    assert vocabulary[vocabulary.index("<|notimestamps|>") + 1] == "<|0.00|>"
    return path
