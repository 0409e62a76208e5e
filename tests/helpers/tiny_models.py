"""Tiny, randomly initialised vision-language models built offline for tests.

The hub is unreachable in tests, so each builder trains a small byte-level BPE tokenizer on a built-in
corpus and writes a complete model directory (config, safetensors, tokenizer, image processor, chat
template, generation config) that the real ``AutoProcessor`` / ``AutoModelForImageTextToText`` load.
Weights are random with a fixed seed: text is garbage, but shapes, templates and token plumbing are real,
so the same directories also serve conversion tests (e.g. to GGUF).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessor,
    Idefics3Processor,
    Idefics3VisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2TokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
)

SEED = 1234

CORPUS = """\
The camera looks down on a busy street where people cross at the lights and cars wait in a long line.
A red bus turns the corner, a cyclist weaves between the taxis, and a dog pulls its owner towards the park.
In the kitchen the cook chops onions, stirs a pot of soup and tastes it before adding more salt and pepper.
The goalkeeper dives to the left, the ball hits the post and the crowd jumps to its feet with a roar.
Rain falls on the window while a cat sleeps on the sofa and the clock on the wall ticks slowly.
Two players shake hands at the net; the score is level and the final set is about to begin.
A child builds a tower of wooden blocks, it wobbles, and everything falls onto the carpet.
The presenter walks across the stage, points at the screen and explains the new chart to the audience.
Snow covers the mountain; a skier races down the slope and sprays white powder into the blue sky.
The market is full of colour: oranges, lemons, green apples, fresh bread, flowers and spices.
Nothing much is happening now. The room is quiet, the lights are low, and the picture is still.
A bird lands on the fence, looks around, and flies away as a truck drives past the house.
The runner leads by ten metres with one lap to go, but the others are closing the gap quickly.
Smoke rises from the chimney of a small cottage beside a lake where a boat drifts on calm water.
The driver parks the car, opens the door, takes a bag from the back seat and walks into the shop.
She plays the piano while he sings; the audience claps along and someone in the front row cheers.
Waves crash on the rocks, gulls circle overhead, and a family builds a sandcastle near the shore.
The scene has changed: we are now inside a train, watching fields and villages rush past the window.
Workers in yellow helmets lift steel beams with a crane on the building site next to the river.
The chef plates the dish, wipes the edge, and a waiter carries it out to the table by the window.
What is happening? Who is speaking? Where are they going, and why are they in such a hurry today?
One, two, three, four, five, six, seven, eight, nine, ten: the countdown ends and the rocket lifts off.
"""

QWEN2VL_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
LLAVA_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
# Idefics3's processor adds <fake_token_around_image>, <image> and <end_of_utterance> itself when missing; they are
# trained in so the model's vocabulary covers them. A frame splits into at most 2×2 tiles: <row_R_col_C> up to 2.
IDEFICS3_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
    *(f"<row_{r}_col_{c}>" for r in (1, 2) for c in (1, 2)),
]

# Qwen2's pre-tokenizer split: the tiny tokenizer behaves like the real one on digits, spaces and punctuation.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The Qwen2-VL-Instruct template: one <|vision_start|><|image_pad|><|vision_end|> per image part.
QWEN2VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A LLaVA-1.5 style template: system text first, then USER: with one <image> line per image part.
LLAVA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['content'] is string %}{% set parts = [{'type': 'text', 'text': message['content']}] %}"
    "{% else %}{% set parts = message['content'] %}{% endif %}"
    "{% if message['role'] == 'system' %}{% for part in parts %}{% if part['type'] == 'text' %}"
    "{{ part['text'] }}\n{% endif %}{% endfor %}"
    "{% else %}{{ message['role'].upper() }}: "
    "{% for part in parts %}{% if part['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for part in parts %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# HuggingFaceM4/Idefics3-8B-Llama3's template: "User:" straight before a leading image, "User: " before text.
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def train_tokenizer(
    special_tokens: Sequence[str],
    *,
    vocab_size: int = 800,
    corpus: str = CORPUS,
    tokenizer_class: type[PreTrainedTokenizerFast] = PreTrainedTokenizerFast,
    **named_tokens: str,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer locally (no hub) with ``special_tokens`` at ids 0..n-1.

    ``named_tokens`` (``bos_token``, ``eos_token``, ``pad_token``, ``unk_token``) must be among
    ``special_tokens``; the rest become additional special tokens so decoding can skip them.
    ``tokenizer_class`` is the fast class a processor insists on (Qwen2-VL wants ``Qwen2TokenizerFast``).
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus.splitlines(), trainer=trainer)
    missing = set(named_tokens.values()) - set(special_tokens)
    if missing:
        raise ValueError(f"named tokens not in special_tokens: {sorted(missing)}")
    additional = [t for t in special_tokens if t not in named_tokens.values()]
    return tokenizer_class(
        tokenizer_object=tok,
        additional_special_tokens=additional,
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],  # no token_type_ids: generate() rejects unused kwargs
        **named_tokens,
    )


def random_model(model_class: type, config: object, bos: int, eos: int | list[int], pad: int) -> torch.nn.Module:
    """``model_class(config)`` with seeded random weights and the generation ids its tokenizer uses."""
    torch.manual_seed(SEED)
    model = model_class(config).eval()
    model.generation_config.bos_token_id = bos
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    return model


def build_tiny_qwen2vl(path: str | Path) -> Path:
    """Write a tiny multi-image Qwen2-VL (vision depth 1, hidden 64) to ``path``; an image costs 4 tokens."""
    path = Path(path)
    tokenizer = train_tokenizer(
        QWEN2VL_SPECIAL_TOKENS,
        tokenizer_class=Qwen2TokenizerFast,
        unk_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.chat_template = QWEN2VL_CHAT_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN2VL_SPECIAL_TOKENS}
    hidden, heads = 64, 4
    head_dim = hidden // heads
    # mrope splits each rotary half (head_dim / 2 frequencies) into temporal, height and width sections.
    mrope_section = [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]
    assert sum(mrope_section) == head_dim // 2
    config = Qwen2VLConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        max_window_layers=2,
        rope_theta=1000000.0,
        rope_scaling={"type": "mrope", "mrope_section": mrope_section},
        tie_word_embeddings=False,
        vision_config={
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": hidden,  # the merger projects vision features into the text hidden size
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        vision_token_id=ids["<|vision_pad|>"],
        torch_dtype="float32",
    )
    model = random_model(
        Qwen2VLForConditionalGeneration,
        config,
        bos=ids["<|endoftext|>"],
        eos=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad=ids["<|endoftext|>"],
    )
    # min/max_pixels (not ``size``) are what survive a save/load round trip in transformers 4.51.
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=56 * 56, patch_size=14, merge_size=2)
    processor = Qwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN2VL_CHAT_TEMPLATE
    )
    model.save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)
    return path


@dataclass(frozen=True)
class LlavaSize:
    """Dimensions of a random LLaVA: the default is tiny (tests); a bench picks one where compute shows."""

    image_size: int = 28
    patch_size: int = 14
    vision_hidden: int = 32
    vision_mlp: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    text_hidden: int = 64
    text_mlp: int = 128
    text_layers: int = 2
    text_heads: int = 4
    max_positions: int = 2048


def build_tiny_llava(path: str | Path, size: LlavaSize = LlavaSize()) -> Path:
    """Write a LLaVA-1.5 style model (CLIP vision, Llama text) to ``path``; by default an image costs 4 tokens."""
    path = Path(path)
    tokenizer = train_tokenizer(
        LLAVA_SPECIAL_TOKENS, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.chat_template = LLAVA_CHAT_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in LLAVA_SPECIAL_TOKENS}
    image_size, patch_size = size.image_size, size.patch_size
    image_tokens = (image_size // patch_size) ** 2  # the "default" strategy drops CLIP's CLS token
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=size.vision_hidden,
            intermediate_size=size.vision_mlp,
            num_hidden_layers=size.vision_layers,
            num_attention_heads=size.vision_heads,
            image_size=image_size,
            patch_size=patch_size,
            projection_dim=size.vision_hidden,
        ).to_dict(),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=size.text_hidden,
            intermediate_size=size.text_mlp,
            num_hidden_layers=size.text_layers,
            num_attention_heads=size.text_heads,
            num_key_value_heads=2,
            max_position_embeddings=size.max_positions,
            bos_token_id=ids["<s>"],
            eos_token_id=ids["</s>"],
            pad_token_id=ids["<pad>"],
        ).to_dict(),
        image_token_index=ids["<image>"],
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=image_tokens,
        pad_token_id=ids["<pad>"],
        torch_dtype="float32",
    )
    model = random_model(LlavaForConditionalGeneration, config, bos=ids["<s>"], eos=ids["</s>"], pad=ids["<pad>"])
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    model.save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)
    return path


def build_tiny_idefics3(path: str | Path) -> Path:
    """Write a tiny Idefics3 (SigLIP-style vision, Llama text) to ``path``: a frame is resized to 112 px on its
    long side and split into 56 px tiles plus a global view, each tile 4 tokens, so rows, columns and the
    <global-img> tag of the real image prompt all appear."""
    path = Path(path)
    tokenizer = train_tokenizer(
        IDEFICS3_SPECIAL_TOKENS, unk_token="<|endoftext|>", eos_token="<end_of_utterance>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = IDEFICS3_CHAT_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in IDEFICS3_SPECIAL_TOKENS}
    tile, patch, scale = 56, 14, 2
    image_seq_len = (tile // patch) ** 2 // scale**2
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=tile,
            patch_size=patch,
        ).to_dict(),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            bos_token_id=ids["<|im_start|>"],
            eos_token_id=ids["<end_of_utterance>"],
            pad_token_id=ids["<|endoftext|>"],
        ).to_dict(),
        scale_factor=scale,
        image_token_id=ids["<image>"],
        pad_token_id=ids["<|endoftext|>"],
        torch_dtype="float32",
    )
    model = random_model(
        Idefics3ForConditionalGeneration,
        config,
        bos=ids["<|im_start|>"],
        eos=ids["<end_of_utterance>"],
        pad=ids["<|endoftext|>"],
    )
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": 2 * tile}, max_image_size={"longest_edge": tile}, do_image_splitting=True
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    model.save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)
    return path


BUILDERS: dict[str, Callable[[str | Path], Path]] = {
    "qwen2vl": build_tiny_qwen2vl,
    "llava": build_tiny_llava,
    "idefics3": build_tiny_idefics3,
}

_cache: dict[str, Path] = {}
_cache_lock = threading.Lock()
_cache_root: Path | None = None


def tiny_model_dir(kind: str) -> Path:
    """The directory of tiny model ``kind`` (``qwen2vl``, ``llava`` or ``idefics3``), built once per process.

    Tests share one build (a few seconds each) instead of rebuilding per test; the temporary
    root is removed when the interpreter exits. Treat the directory as read-only.
    """
    global _cache_root
    if kind not in BUILDERS:
        raise KeyError(f"unknown tiny model '{kind}'; allowed: {', '.join(BUILDERS)}")
    with _cache_lock:
        if kind not in _cache:
            if _cache_root is None:
                _cache_root = Path(tempfile.mkdtemp(prefix="onlooker-tiny-models-"))
                atexit.register(shutil.rmtree, _cache_root, True)
            _cache[kind] = BUILDERS[kind](_cache_root / kind)
        return _cache[kind]
