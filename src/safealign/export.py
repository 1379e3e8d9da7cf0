"""Export a trained model: the adapter alone (peft format, with the tokenizer and a note of its base), or merged
into its base and saved as sharded safetensors with the tokenizer, loadable by any HF tool without safealign.

Merging needs the full-precision base: a LoRA trained on a quantised (QLoRA, NF4) base is merged into the
original fp16/bf16/fp32 weights (`base=`), never into the quantised ones, whose rounding would change the model.
Writes go to a temporary directory renamed into place, so a killed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safealign.errors import SafealignError
from safealign.models import CHAIN_FILE, DTYPES, load_tokenizer, merge_adapters, model_chain

# transformers is imported inside the functions that use it: importing takes seconds that
# commands which never reach them (--dry-run, schema, config errors) should not wait for.

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def quantised(model_path: str) -> bool:
    """Whether a model directory's config declares quantised weights (bitsandbytes, GPTQ, AWQ ...)."""
    config = Path(model_path) / "config.json"
    return config.exists() and "quantization_config" in json.loads(config.read_text())


def export_model(model: str, out: Path, merge: bool, base: str = "", dtype: str = "float32",
                 max_shard_size: str = "2GB") -> Path:
    """Export `model` (a stage output or any model directory) to `out`; returns `out`."""
    chain = model_chain(model)
    if base:
        chain = [base] + chain[1:]
    if out.exists():
        raise SafealignError(f"export: {out} exists; choose a new directory")
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if merge:
            _export_merged(chain, tmp, DTYPES[dtype], max_shard_size)
        else:
            _export_adapter(chain, tmp)
        load_tokenizer(model).save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(out)
    return out


def _export_merged(chain: list[str], out: Path, dtype, max_shard_size: str) -> None:
    from transformers import AutoModelForCausalLM

    if quantised(chain[0]):
        raise SafealignError(f"export: the base {chain[0]} is quantised; merging into it would round the merged "
                             f"weights. Merge into the full-precision base instead: base=PATH_OF_THE_FP16_OR_BF16_MODEL")
    merged = merge_adapters(AutoModelForCausalLM.from_pretrained(chain[0], dtype=dtype), chain[1:])
    merged.save_pretrained(out, safe_serialization=True, max_shard_size=max_shard_size)


def _export_adapter(chain: list[str], out: Path) -> None:
    if len(chain) != 2:
        what = "a full model" if len(chain) == 1 else f"a chain of {len(chain) - 1} adapters"
        raise SafealignError(f"export: the model is {what}, not one adapter on a base; export it merged (merge=true)")
    adapter = Path(chain[1])
    for name in ADAPTER_FILES:
        if not (adapter / name).exists():
            raise SafealignError(f"export: {adapter} has no {name}")
        shutil.copy2(adapter / name, out / name)
    (out / CHAIN_FILE).write_text(json.dumps({"kind": "adapter", "base": chain[0]}, indent=2))
