"""Preference pairs scored by the model itself, no judge: ORPO's log odds ratio of the chosen over the rejected
response (per-token mean log-probs, losses/preference.py), the share of pairs where it is positive, and the
chosen responses' NLL (token mean over response tokens: the eval loss)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from safealign.config import opt
from safealign.data.formats import collate_pairs, tokenize_pair
from safealign.data.pairs import read_pairs
from safealign.data.prompts import PromptFormat, prompt_record, prompt_setting, render_prompt
from safealign.methods.orpo import orpo_terms


@dataclass
class PairOddsConfig:
    registry_name = "pair_odds"
    pairs: str = opt("", "pairs file (ours or TRL's format), e.g. 'stage:prepare/pairs_test.jsonl'")
    num: int = opt(0, "first N pairs; 0 = all")
    prompt: PromptFormat = prompt_setting("alpaca", "prompt format (data/prompts.py), as the training stage's "
                                                    "data.prompt", was="template")
    batch_size: int = opt(16, "pairs per forward")
    max_length: int = opt(512, "truncate prompt+response to this many tokens")


@torch.no_grad()
def run(cfg: PairOddsConfig, model, tokenizer) -> tuple[dict, list[dict]]:
    pairs = read_pairs(cfg.pairs)
    pairs = pairs[: cfg.num or len(pairs)]
    model.eval()
    device = next(model.parameters()).device
    records, nll_sum, tokens = [], 0.0, 0
    for start in range(0, len(pairs), cfg.batch_size):
        chunk = pairs[start:start + cfg.batch_size]
        batch = collate_pairs([tokenize_pair(tokenizer, p, cfg.max_length, cfg.prompt) for p in chunk], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        nll, _, log_odds = orpo_terms(model, batch)
        n = int((batch["labels"][: len(chunk), 1:] != -100).sum())
        nll_sum, tokens = nll_sum + nll.item() * n, tokens + n
        records += [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"], "log_odds_ratio": round(x, 4)}
                    for p, x in zip(chunk, log_odds.tolist())]
    ratios = [r["log_odds_ratio"] for r in records]
    return {"log_odds_ratio": round(sum(ratios) / len(ratios), 4),
            "pair_accuracy": round(sum(x > 0 for x in ratios) / len(ratios), 4),
            "chosen_nll": round(nll_sum / max(tokens, 1), 4), "n_pairs": len(records),
            "prompt": prompt_record(cfg.prompt.kind, render_prompt(cfg.prompt, tokenizer, pairs[0]["prompt"]))}, records
