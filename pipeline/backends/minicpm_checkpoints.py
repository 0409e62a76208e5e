"""MiniCPM checkpoints: which published builds exist, what each needs, and which precision fits.

Apart from the backend because it is pure (no torch, no model): the UI and the CLI can say what a
checkpoint needs before anything loads, and the rules are tested without a GPU.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from pipeline.errors import BackendError

SUPPORTED_TRANSFORMERS = "4.51."


@dataclass(frozen=True)
class Variant:
    """A published checkpoint and what it needs."""

    family: str  # "o" (vision + audio + voice) or "v" (vision only)
    bf16_gb: float
    int4: str  # the repository of its 4-bit build
    int4_gb: float
    int4_package: str  # import name of the loader the 4-bit build needs
    int4_pip: str


VARIANTS = {
    "openbmb/MiniCPM-o-4_5": Variant("o", 19.0, "openbmb/MiniCPM-o-4_5-awq", 11.0, "awq", "autoawq"),
    "openbmb/MiniCPM-V-4_5": Variant("v", 18.0, "openbmb/MiniCPM-V-4_5-AWQ", 9.0, "awq", "autoawq"),
}


def variant_of(model: str) -> Variant | None:
    """The known checkpoint ``model`` names (its BF16 or its 4-bit repository), if any."""
    for name, variant in VARIANTS.items():
        if model.lower() in (name.lower(), variant.int4.lower()):
            return variant
    return None


def choose_precision(requested: str, free_gb: float | None, variant: Variant | None) -> tuple[str, str]:
    """(``bf16`` | ``int4``, why) for ``--precision``; ``auto`` takes INT4 when BF16 does not fit."""
    if requested != "auto":
        return requested, f"--precision {requested}"
    if free_gb is None:
        return "bf16", "no GPU: full precision on the CPU"
    if variant is None:
        return "bf16", "a local or unknown checkpoint is loaded as it is"
    if free_gb >= variant.bf16_gb:
        return "bf16", f"{free_gb:.0f} GB free, BF16 needs ~{variant.bf16_gb:.0f} GB"
    if free_gb >= variant.int4_gb:
        return "int4", f"{free_gb:.0f} GB free: too little for BF16 (~{variant.bf16_gb:.0f} GB), INT4 fits"
    raise BackendError(
        f"not enough GPU memory: {free_gb:.1f} GB free, MiniCPM needs ~{variant.bf16_gb:.0f} GB in BF16 or "
        f"~{variant.int4_gb:.0f} GB in INT4 ({variant.int4}); free the GPU, use --vision-only with "
        "openbmb/MiniCPM-V-4_5, or serve it on a bigger machine with --backend openai"
    )


def missing_packages(needed: dict[str, str]) -> list[str]:
    """pip requirements of ``needed`` (import name → requirement) that are not importable."""
    return [pip for name, pip in needed.items() if importlib.util.find_spec(name) is None]


def check_transformers(version: str) -> None:
    """The model card pins transformers 4.51.x; other versions break its remote code in odd ways."""
    if not version.startswith(SUPPORTED_TRANSFORMERS):
        raise BackendError(
            f"MiniCPM's model code needs transformers {SUPPORTED_TRANSFORMERS}x, this is {version}; "
            "run `pip install transformers==4.51.3`"
        )
