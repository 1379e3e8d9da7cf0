"""The difficulty stage: per-sample unlearning difficulty of a forget set (data/difficulty.py), as scores.json."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from safealign.config import one_of, opt
from safealign.data.difficulty import difficulty_scores, write_scores
from safealign.data.formats import tokenize_example
from safealign.data.prompts import PromptFormat, prompt_setting
from safealign.data.sources import SourceConfig, load_examples
from safealign.errors import ConfigError
from safealign.models import LoraConfig, ModelConfig, add_lora, load_causal_lm, load_tokenizer


@dataclass
class DifficultyStage:
    """Per-sample unlearning difficulty of a forget set under the model to be unlearned (data/difficulty.py),
    written as scores.json in the stage directory; an unlearning stage orders its forget set by it with
    data.difficulty: 'stage:NAME/scores.json' and data.forget_order: asc | desc."""

    kind: str = opt("difficulty", "stage kind")
    model: ModelConfig = opt(None, "the model to be unlearned")
    lora: LoraConfig = opt(None, "its trainable parameters as the unlearning stage will have them (enabled: false = all)")
    forget: SourceConfig | None = opt(None, "the forget set, exactly as the unlearning stage reads it")
    prompt: PromptFormat = prompt_setting("alpaca", "its prompt format, as the unlearning stage's data.prompt "
                                                    "(data/prompts.py)")
    along: str = opt("start", "where the gradients are taken: start (all at the starting weights) | ga_epoch "
                              "(along one epoch of SGD gradient ascent, in the unlearning stream's first-epoch order)")
    lr: float = opt(1e-4, "step size of that gradient-ascent epoch (along: ga_epoch)")
    batch_size: int = opt(16, "rows per batched backward when summing G (along: start)")
    seed: int = opt(-1, "random seed (a fresh LoRA's initialisation, the ga_epoch order); must equal the "
                        "unlearning stage's; -1 takes the recipe's seed")

    def __post_init__(self) -> None:
        self.model = self.model or ModelConfig()
        self.lora = self.lora or LoraConfig(enabled=False)

    def paths(self) -> Iterator[tuple[str, str, str]]:
        yield "model", "model.path", self.model.path
        yield "data", "forget.path", self.forget.path

    def validate(self, where: str) -> None:
        if self.forget is None:
            raise ConfigError(f"{where}.forget: a difficulty stage needs the forget set")
        one_of(self.along, ("start", "ga_epoch"), f"{where}.along")
        if self.batch_size < 1 or self.lr < 0:
            raise ConfigError(f"{where}: batch_size must be >= 1 and lr >= 0")


def run(unit) -> dict:
    cfg: DifficultyStage = unit.config
    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    torch.manual_seed(cfg.seed)
    model = add_lora(load_causal_lm(cfg.model.path, torch.float32, cfg.model.trust_remote_code), cfg.lora)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    features = [tokenize_example(tokenizer, e, cfg.model.max_length, cfg.prompt) for e in load_examples(cfg.forget)]
    scores, g_norm = difficulty_scores(model, features, tokenizer.pad_token_id, cfg.along, cfg.lr, cfg.seed,
                                       cfg.batch_size)
    write_scores(unit.out_dir / "scores.json", cfg.forget, cfg.seed, scores, g_norm, cfg.along, cfg.lr)
    print(f"   difficulty of {len(scores)} forget rows ({cfg.along}): min {min(scores):.4g}, max {max(scores):.4g}, "
          f"|G| {g_norm:.4g}; written to {unit.out_dir / 'scores.json'}", flush=True)
    return {"n": len(scores), "g_norm": g_norm, "along": cfg.along}
