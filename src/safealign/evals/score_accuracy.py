"""Score-model accuracy on held-out preference pairs: the reward model should score the chosen (better)
response higher; the cost model should cost the chosen (safer) response less, and its sign should say
safe (< 0) or unsafe (> 0) as the labels do (safe-rlhf's `accuracy` and `accuracy_sign`). The pairs are rendered
in the score model's own prompt format, the one it was trained under (score_model.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from safealign.config import one_of, opt
from safealign.data.formats import collate_pairs, tokenize_pair
from safealign.data.pairs import read_pairs
from safealign.data.prompts import prompt_record, render_prompt
from safealign.io import progress_kwargs
from safealign.losses.reward import pair_accuracy, sign_accuracy


@dataclass
class ScoreAccuracyConfig:
    registry_name = "score_accuracy"
    pairs: str = opt("", "held-out pairs file, ours or TRL's format (e.g. 'stage:pairs/test/helpful_pairs.jsonl')")
    kind: str = opt("reward", "reward (chosen = better, should score higher) | cost (chosen = safer, should cost less)")
    num: int = opt(0, "first N pairs; 0 = all")
    batch_size: int = opt(32, "pairs per forward pass")
    max_length: int = opt(512, "truncate prompt+response to this many tokens")

    def validate(self, where: str) -> None:
        one_of(self.kind, ("reward", "cost"), f"{where}.kind")


@torch.no_grad()
def run(cfg: ScoreAccuracyConfig, model, tokenizer) -> tuple[dict, list[dict]]:
    pairs = read_pairs(cfg.pairs)
    pairs = pairs[: cfg.num or len(pairs)]
    device = next(model.parameters()).device
    chosen, rejected = [], []
    model.eval()
    for start in tqdm(range(0, len(pairs), cfg.batch_size), desc=f"score ({cfg.kind})", **progress_kwargs()):
        chunk = pairs[start:start + cfg.batch_size]
        batch = collate_pairs([tokenize_pair(tokenizer, p, cfg.max_length, model.prompt) for p in chunk],
                              tokenizer.pad_token_id)
        scores = model(batch["input_ids"].to(device), batch["attention_mask"].to(device)).cpu()  # (2B,)
        half = scores.shape[0] // 2
        chosen.append(scores[:half])
        rejected.append(scores[half:])
    chosen, rejected = torch.cat(chosen), torch.cat(rejected)
    records = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"], "score_chosen": round(float(c), 4),
                "score_rejected": round(float(r), 4)} for p, c, r in zip(pairs, chosen, rejected)]
    common = {"n_pairs": len(pairs),
              "prompt": prompt_record(model.prompt.kind, render_prompt(model.prompt, tokenizer, pairs[0]["prompt"]))}
    if cfg.kind == "reward":
        return {"reward_accuracy": round(pair_accuracy(chosen, rejected), 4), **common}, records
    is_safe = torch.tensor([p["chosen_is_safe"] for p in pairs] + [p["rejected_is_safe"] for p in pairs])
    return {"cost_accuracy": round(pair_accuracy(rejected, chosen), 4),
            "cost_sign_accuracy": round(sign_accuracy(torch.cat([chosen, rejected]), is_safe), 4), **common}, records
