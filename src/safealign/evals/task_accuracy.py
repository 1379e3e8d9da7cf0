"""Fine-tune accuracy (FA): 100 · correct / N on the task's evaluation split, with the task's own answer
check (SST2/AGNews: the label word as the Lisa scripts accept it; GSM8K: the number after 'The final answer
is:' else the last number)."""

from __future__ import annotations

from dataclasses import dataclass

from safealign.config import opt
from safealign.data.prompts import PromptFormat, prompt_record, prompt_setting, render_prompt
from safealign.data.sources import SourceConfig, SOURCES, load_examples
from safealign.errors import ConfigError
from safealign.generation import generate


@dataclass
class TaskAccuracyConfig:
    registry_name = "finetune_accuracy"
    data: SourceConfig = opt(SourceConfig(source="sst2", path="mini:sst2", split="validation"),
                             "evaluation split of the fine-tuning task (sst2, agnews or gsm8k schema)")
    num: int = opt(0, "first N rows; 0 = all")
    prompt: PromptFormat = prompt_setting("alpaca", "prompt format of the task rows (data/prompts.py), as the "
                                                    "evaluated models were trained")
    max_new_tokens: int = opt(16, "generation length (GSM8K needs ~256)")
    batch_size: int = opt(64, "generation batch size")

    def validate(self, where: str) -> None:
        if not hasattr(SOURCES.get(self.data.source), "is_correct"):
            raise ConfigError(f"{where}.data.source: '{self.data.source}' has no answer check (use sst2, agnews or gsm8k)")


def run(cfg: TaskAccuracyConfig, model, tokenizer) -> tuple[dict, list[dict]]:
    rows = load_examples(cfg.data)
    rows = rows[: cfg.num or len(rows)]
    prompts = [render_prompt(cfg.prompt, tokenizer, r["instruction"], r["input"]) for r in rows]
    responses = generate(model, tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size, desc="generate (task)")
    is_correct = SOURCES[cfg.data.source].is_correct
    records = [{"instruction": r["instruction"], "input": r["input"], "reference": r["output"], "response": a,
                "correct": is_correct(a, r["meta"])} for r, a in zip(rows, responses)]
    correct = sum(r["correct"] for r in records)
    return {"finetune_accuracy": round(100.0 * correct / len(rows), 2), "n_task": len(rows),
            "prompt": prompt_record(cfg.prompt.kind, prompts[0])}, records
