"""The export stage: a trained model's adapter, or the model merged into its base (export.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

from safealign.config import one_of, opt
from safealign.errors import ConfigError
from safealign.export import export_model


@dataclass
class ExportStage:
    """Export a trained model into the stage directory's `model/`: its adapter (peft format), or merged into its
    base as sharded safetensors with the tokenizer (export.py)."""

    kind: str = opt("export", "stage kind")
    model: str = opt("", "the model to export, usually 'stage:NAME'")
    merge: bool = opt(True, "merge the adapters into the base; false exports the adapter alone")
    base: str = opt("", "full-precision base to merge into instead of the chain's own (after QLoRA)")
    dtype: str = opt("float32", "dtype of the merged weights: float32, bfloat16, float16")
    max_shard_size: str = opt("2GB", "largest safetensors shard")

    def paths(self) -> Iterator[tuple[str, str, str]]:
        yield "model", "model", self.model
        if self.base:
            yield "model", "base", self.base

    def validate(self, where: str) -> None:
        if not self.model:
            raise ConfigError(f"{where}.model: an export stage needs a model")
        one_of(self.dtype, ("float32", "bfloat16", "float16"), f"{where}.dtype")


def run(unit) -> dict:
    cfg: ExportStage = unit.config
    out = unit.out_dir / "model"
    shutil.rmtree(out, ignore_errors=True)  # a rerun replaces what an interrupted one left
    export_model(cfg.model, out, cfg.merge, cfg.base, cfg.dtype, cfg.max_shard_size)
    print(f"   exported {'the merged model' if cfg.merge else 'the adapter'} to {out}", flush=True)
    return {"path": str(out), "merged": cfg.merge, "files": sorted(p.name for p in out.iterdir())}
