"""The prepare stage: instruction-tuning data preparation (data/prepare/) into the stage directory."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from safealign.config import opt
from safealign.data.prepare.prepare import PrepareConfig, prepare
from safealign.errors import ConfigError
from safealign.models import load_tokenizer


@dataclass
class PrepareStage(PrepareConfig):
    """Instruction-tuning data preparation (data/prepare/) into the stage directory: sft.jsonl and/or
    pairs.jsonl, stats.json, DATA_CARD.md (later stages read 'stage:NAME/sft.jsonl')."""

    kind: str = opt("prepare", "stage kind")
    tokenizer: str = opt("mini:base", "model whose tokenizer measures lengths for the buckets")
    seed: int = opt(-1, "seed of the sampler; -1 takes the recipe's seed")

    def validate(self, where: str = "prepare") -> None:
        if self.output_dir:
            raise ConfigError(f"{where}.output_dir: a prepare stage writes into its own stage directory")
        super().validate(where)

    def paths(self) -> Iterator[tuple[str, str, str]]:
        yield "model", "tokenizer", self.tokenizer
        for k, source in enumerate(self.sources):
            yield "data", f"sources[{k}].path", source.path

    def prepare_config(self, output_dir: str) -> PrepareConfig:
        """The data-preparation config of this stage, writing into `output_dir`."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(PrepareConfig)}
        return PrepareConfig(**{**fields, "output_dir": output_dir})


def run(unit) -> dict:
    cfg: PrepareStage = unit.config
    tokenizer = load_tokenizer(cfg.tokenizer)
    stats = prepare(cfg.prepare_config(str(unit.out_dir)),
                    lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return {k: v for k, v in stats.items() if k not in ("config",)}
