"""Loading a model's own code (``trust_remote_code``) without demanding packages it will not import.

Before it runs remote code, transformers lists every package the file imports and refuses to load
when one is missing. It skips imports inside ``try`` and ``if is_flash_attn...()`` blocks, but not
imports behind a setting: MiniCPM-o 4.5 imports ``flag_gems`` only when ``USE_FLAGOS=1``, so every
user without FlagGems would be told to install a Triton kernel library the model never touches.
:func:`settings_aware_import_check` narrows the check to what the file imports with the environment
as it is; the model's code itself is left exactly as published. :func:`load_remote_model` loads such
a model (MiniCPM-o, MiniCPM-V) the way its model card does, with the check narrowed and loading quiet.
"""

from __future__ import annotations

import ast
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def imports_switched_off(source: str, environ: dict[str, str] | None = None) -> set[str]:
    """Top-level packages imported only inside module-level ``if`` blocks that read the environment
    (``os.getenv`` / ``os.environ``) and are false with ``environ`` (default: this process's)."""
    tree = ast.parse(source)
    switched_off = [node for node in tree.body if isinstance(node, ast.If) and _false_setting(node.test, environ)]
    inside = {id(n) for block in switched_off for stmt in block.body for n in ast.walk(stmt)}
    guarded = {name for block in switched_off for stmt in block.body for name in _imports(stmt)}
    elsewhere = {name for node in ast.walk(tree) if id(node) not in inside for name in _imports(node, deep=False)}
    return guarded - elsewhere


def _false_setting(test: ast.expr, environ: dict[str, str] | None) -> bool:
    """Whether ``test`` only reads environment variables and is false now; anything else counts as true."""
    names = {n.id for n in ast.walk(test) if isinstance(n, ast.Name)}
    reads = any(isinstance(n, ast.Attribute) and n.attr in ("getenv", "environ") for n in ast.walk(test))
    if names != {"os"} or not reads:
        return False
    environ = dict(os.environ if environ is None else environ)
    view = _EnvironOnly(environ)
    try:
        return not eval(compile(ast.Expression(test), "<setting>", "eval"), {"__builtins__": {}}, {"os": view})
    except Exception:  # an expression we cannot evaluate safely: assume the import may run
        return False


class _EnvironOnly:
    """Stands in for ``os`` while a guard is evaluated: the environment, nothing else."""

    def __init__(self, environ: dict[str, str]) -> None:
        self.environ = environ

    def getenv(self, key: str, default: str | None = None) -> str | None:
        return self.environ.get(key, default)


def _imports(node: ast.AST, deep: bool = True) -> set[str]:
    nodes = ast.walk(node) if deep else [node]
    found: set[str] = set()
    for n in nodes:
        if isinstance(n, ast.Import):
            found.update(alias.name.split(".")[0] for alias in n.names)
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            found.add(n.module.split(".")[0])
    return found


@contextlib.contextmanager
def settings_aware_import_check() -> Iterator[None]:
    """While loading: transformers' import check leaves out imports switched off by the environment."""
    from transformers import dynamic_module_utils

    original = dynamic_module_utils.get_imports

    def get_imports(filename: str | os.PathLike) -> list[str]:
        off = imports_switched_off(Path(filename).read_text(encoding="utf-8"))
        return [name for name in original(filename) if name not in off]

    dynamic_module_utils.get_imports = get_imports
    try:
        yield
    finally:
        dynamic_module_utils.get_imports = original


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """While loading: only errors from transformers and the model's code. Loading MiniCPM-o prints half a
    dozen notices meant for its developers (deprecations, "slow image processor", "audio tokenizer type
    is set to ...") that would bury the lines a user needs."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    remote = logging.getLogger("transformers_modules")
    remote_level = remote.level
    hf_logging.set_verbosity_error()
    remote.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"transformers\.")
            yield
    finally:
        hf_logging.set_verbosity(level)
        remote.setLevel(remote_level)


def load_remote_model(path: Path, dtype: torch.dtype, attn: str, vision_only: bool, device: torch.device) -> Any:
    """``AutoModel.from_pretrained`` with the model's own code, as the model card loads it."""
    from transformers import AutoModel

    kwargs: dict[str, Any] = {"trust_remote_code": True, "attn_implementation": attn, "torch_dtype": dtype}
    if vision_only:
        kwargs.update(init_vision=True, init_audio=False, init_tts=False)
    with settings_aware_import_check(), quiet_transformers():
        model = AutoModel.from_pretrained(str(path), **kwargs)
    if not hasattr(model, "tokenizer"):  # MiniCPM-V's chat needs one passed in; o-4.5 loads its own
        from transformers import AutoTokenizer

        model.tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=True)
    return model.eval().to(device)
